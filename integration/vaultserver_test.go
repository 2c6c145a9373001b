package integration

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// vaultServer is a Vault dev server (open-source Vault 1.14.2, built by
// integration/backends/vault) running as a separate process on loopback,
// with the root token "root". It keeps everything in memory.
type vaultServer struct {
	*process
	Port int
}

func (v *vaultServer) Addr() string { return fmt.Sprintf("http://127.0.0.1:%d", v.Port) }

// Env points secretfs at this server; auth comes from the test's flags.
func (v *vaultServer) Env(t testing.TB, token string) []string {
	env := []string{"VAULT_ADDR=" + v.Addr(), "HOME=" + t.TempDir(), "VAULT_TOKEN=" + token}
	return env
}

// Client is a root client for test setup.
func (v *vaultServer) Client() *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr()
	c, err := api.NewClient(cfg)
	if err != nil {
		panic(err) // only on a malformed address
	}
	c.SetToken("root")
	return c
}

func launchVault(bin string, port int) (*vaultServer, error) {
	port, err := portOr(port)
	if err != nil {
		return nil, err
	}
	home, err := os.MkdirTemp("", "vault-home-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "server", "-dev", "-dev-root-token-id=root",
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port), "-dev-no-store-token")
	cmd.Env = append(os.Environ(), "HOME="+home, "VAULT_ADDR=", "VAULT_TOKEN=")
	p, err := startProcess("vault", cmd, fmt.Sprintf("http://127.0.0.1:%d/v1/sys/health", port))
	if err != nil {
		os.RemoveAll(home)
		return nil, err
	}
	go func() { <-p.done; os.RemoveAll(home) }()
	return &vaultServer{process: p, Port: port}, nil
}

func startVault(t testing.TB, port int) *vaultServer {
	t.Helper()
	v, err := launchVault(backendBin(t, "SECRETFS_VAULT_BIN"), port)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var (
	sharedVault sharedBackend[*vaultServer]
	vaultFix    vaultFixture
)

// vaultFixture is what seedVault created that tests need.
type vaultFixture struct {
	roleID, secretID string
	jwtKey           *rsa.PrivateKey
	created          map[string]time.Time // path -> created_time of the current version
}

func vaultShared(t testing.TB) *vaultServer {
	t.Helper()
	bin := backendBin(t, "SECRETFS_VAULT_BIN")
	return sharedVault.get(t, func() (*vaultServer, error) {
		v, err := launchVault(bin, 0)
		if err != nil {
			return nil, err
		}
		atExit(v.Stop)
		return v, seedVault(v)
	})
}

const appPolicy = `
path "secret/*" { capabilities = ["read", "list"] }
path "secret/data/denied-leaf" { capabilities = ["deny"] }
path "kv1/*" { capabilities = ["deny"] }
`

// narrowPolicy grants one secret and nothing else, not even a listing.
const narrowPolicy = `
path "secret/data/team/app/db" { capabilities = ["read"] }
`

// seedVault creates the data set through the API, as an operator would.
func seedVault(v *vaultServer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := v.Client()
	var firstErr error
	w := func(path string, data map[string]any) *api.Secret {
		s, err := c.Logical().WriteWithContext(ctx, path, data)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("write %s: %w", path, err)
		}
		return s
	}
	kv2 := func(path string, data map[string]any) {
		s := w("secret/data/"+path, map[string]any{"data": data})
		if s != nil {
			if ct, ok := s.Data["created_time"].(string); ok {
				vaultFix.created[path], _ = time.Parse(time.RFC3339Nano, ct)
			}
		}
	}
	vaultFix.created = make(map[string]time.Time)
	kv2("myapp", map[string]any{"user": "app", "password": "s3cr3t pw", "port": 5432})
	kv2("team/app/db", map[string]any{"password": "db-pw"})
	kv2("team/web", map[string]any{"token": "web-token"})
	for _, val := range []string{"one", "two", "three"} {
		kv2("versioned", map[string]any{"v": val})
	}
	kv2("deleted", map[string]any{"v": "a"})
	kv2("deleted", map[string]any{"v": "b"})
	if _, err := c.Logical().DeleteWithContext(ctx, "secret/data/deleted"); err != nil && firstErr == nil {
		firstErr = err
	}
	kv2("destroyed", map[string]any{"v": "x"})
	kv2("destroyed", map[string]any{"v": "y"})
	w("secret/destroy/destroyed", map[string]any{"versions": []int{1}})
	kv2("app", map[string]any{"v": "app-itself"})
	kv2("app/child", map[string]any{"v": "c"})
	kv2("rotate", map[string]any{"v": "first"})

	w("sys/mounts/kv1", map[string]any{"type": "kv", "options": map[string]any{"version": "1"}})
	w("kv1/plain", map[string]any{"api_key": "kv1-key"})
	w("kv1/nested/x", map[string]any{"a": "b"})
	w("cubbyhole/note", map[string]any{"text": "in the cubbyhole"})

	w("sys/policies/acl/secretfs-app", map[string]any{"policy": appPolicy})
	w("sys/policies/acl/secretfs-narrow", map[string]any{"policy": narrowPolicy})
	w("sys/auth/approle", map[string]any{"type": "approle"})
	w("auth/approle/role/secretfs", map[string]any{"token_policies": []string{"secretfs-app"}, "token_ttl": "1h"})
	if s, err := c.Logical().ReadWithContext(ctx, "auth/approle/role/secretfs/role-id"); err == nil && s != nil {
		vaultFix.roleID, _ = s.Data["role_id"].(string)
	}
	if s := w("auth/approle/role/secretfs/secret-id", nil); s != nil {
		vaultFix.secretID, _ = s.Data["secret_id"].(string)
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	vaultFix.jwtKey = key
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	for _, mnt := range []string{"jwt", "kubernetes"} {
		w("sys/auth/"+mnt, map[string]any{"type": "jwt"})
		w("auth/"+mnt+"/config", map[string]any{"jwt_validation_pubkeys": []string{pub}, "bound_issuer": "secretfs-test"})
		w("auth/"+mnt+"/role/secretfs", map[string]any{
			"role_type": "jwt", "bound_audiences": []string{"secretfs"}, "user_claim": "sub",
			"token_policies": []string{"secretfs-app"}, "token_ttl": "1h",
		})
	}
	if firstErr == nil && (vaultFix.roleID == "" || vaultFix.secretID == "") {
		firstErr = fmt.Errorf("approle: no role id or secret id")
	}
	return firstErr
}

// signJWT makes an RS256 token the jwt auth method accepts.
func signJWT(key *rsa.PrivateKey, sub string) (string, error) {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now()
	input := enc(map[string]any{"alg": "RS256", "typ": "JWT"}) + "." + enc(map[string]any{
		"iss": "secretfs-test", "sub": sub, "aud": "secretfs",
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// writeFile writes content to a new file in a temp dir and returns its path.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := t.TempDir() + "/" + name
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// vaultMount mounts the vault provider against v with extra flags.
func vaultMount(t testing.TB, v *vaultServer, token string, args ...string) *daemon {
	return mount(t, v.Env(t, token), append([]string{"--providers", "vault"}, args...)...)
}

// approleArgs are the flags of an AppRole login with the fixture's role.
func approleArgs(t testing.TB) []string {
	return []string{"--vault-auth", "approle",
		"--vault-role-id-file", writeFile(t, "role-id", vaultFix.roleID),
		"--vault-secret-id-file", writeFile(t, "secret-id", vaultFix.secretID+"\n")}
}
