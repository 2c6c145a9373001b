package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/secrets-store-csi-driver/pkg/util/fileutil"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"
)

// csiProvider is a running `secretfs csi-provider` and the driver's own
// client of its socket.
type csiProvider struct {
	*daemon
	Socket string
	Health string // HOST:PORT of --health-addr
	Client v1alpha1.CSIDriverProviderClient
}

var csiReady = regexp.MustCompile(`^secretfs: csi provider on (\S+) \(health on (\S+)\)`)

// startCSI starts the provider on a socket in a fresh directory, waits for
// its ready line, connects as the driver does, and stops it (SIGTERM, exit
// 0, socket gone) when the test ends.
func startCSI(t *testing.T, env []string, args ...string) *csiProvider {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "secretfs.sock")
	p := launchCSI(t, sock, env, args...)
	t.Cleanup(func() {
		if err := p.terminate(); err != nil {
			t.Errorf("csi-provider after SIGTERM: %v\n%s", err, p.Stderr())
		}
		if _, err := os.Lstat(sock); err == nil {
			t.Errorf("the socket %s was left behind", sock)
		}
	})
	return p
}

func launchCSI(t *testing.T, sock string, env []string, args ...string) *csiProvider {
	t.Helper()
	d := &daemon{t: t}
	line := d.start(append([]string{"csi-provider", "--log-level", "debug", "--endpoint", sock, "--health-addr", "127.0.0.1:0"}, args...), env)
	m := csiReady.FindStringSubmatch(line)
	if m == nil || m[1] != sock {
		d.kill()
		t.Fatalf("unexpected ready line %q", line)
	}
	p := &csiProvider{daemon: d, Socket: sock, Health: m[2]}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.Client = v1alpha1.NewCSIDriverProviderClient(conn)
	return p
}

// pod is what the driver knows of a pod: its attributes and the tokens
// kubelet requested for it, by audience.
type pod struct {
	Namespace, Name, ServiceAccount string
	Tokens                          map[string]string
}

// mount makes the driver's Mount call for pod with the class's parameters
// and, when it succeeds, writes the files the way the driver does
// (fileutil.WritePayloads: validation, the atomic ..data layout) into
// target. It returns the object versions by id.
func (p *csiProvider) mount(t *testing.T, pd pod, params map[string]string, target string) (map[string]string, error) {
	t.Helper()
	attrs := map[string]string{
		"csi.storage.k8s.io/pod.name": pd.Name, "csi.storage.k8s.io/pod.namespace": pd.Namespace,
		"csi.storage.k8s.io/pod.uid": "uid-" + pd.Name, "csi.storage.k8s.io/serviceAccount.name": pd.ServiceAccount,
		"csi.storage.k8s.io/ephemeral": "false", "secretProviderClass": "spc",
	}
	if len(pd.Tokens) > 0 {
		toks := map[string]map[string]string{}
		for aud, tok := range pd.Tokens {
			toks[aud] = map[string]string{"token": tok, "expirationTimestamp": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}
		}
		b, _ := json.Marshal(toks)
		attrs["csi.storage.k8s.io/serviceAccount.tokens"] = string(b)
	}
	for k, v := range params {
		attrs[k] = v
	}
	b, _ := json.Marshal(attrs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := p.Client.Mount(ctx, &v1alpha1.MountRequest{Attributes: string(b), Secrets: "{}", TargetPath: target, Permission: "420"})
	if err != nil {
		return nil, err
	}
	if err := fileutil.WritePayloads(target, resp.GetFiles()); err != nil {
		t.Fatalf("the driver's writer refused the files: %v", err)
	}
	versions := map[string]string{}
	for _, v := range resp.GetObjectVersion() {
		versions[v.Id] = v.Version
	}
	return versions, nil
}

// readTarget reads a file the driver wrote below target.
func readTarget(t *testing.T, target, path string) (string, os.FileMode) {
	t.Helper()
	p := filepath.Join(target, path)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), st.Mode().Perm()
}

// csiVault makes two Vault roles for pods through the fixture's
// "kubernetes" auth mount (a jwt method, as a cluster's would validate
// service-account tokens): PREFIX-a for team-a/app-a and PREFIX-b for
// team-b/app-b, each with a policy of the same name that reads only
// secret/csi/PREFIX/<x>/.
func csiVault(t *testing.T, prefix string) *vaultServer {
	t.Helper()
	v := vaultShared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := v.Client().Logical()
	for _, x := range []string{"a", "b"} {
		name := prefix + "-" + x
		steps := []struct {
			path string
			data map[string]any
		}{
			{"sys/policies/acl/" + name, map[string]any{"policy": `path "secret/data/csi/` + prefix + "/" + x + `/*" { capabilities = ["read"] }`}},
			{"auth/kubernetes/role/" + name, map[string]any{"role_type": "jwt", "bound_audiences": []string{"secretfs"}, "user_claim": "sub",
				"bound_subject": "system:serviceaccount:team-" + x + ":app-" + x, "token_policies": []string{name}, "token_ttl": "1h"}},
			{"secret/data/csi/" + prefix + "/" + x + "/db", map[string]any{"data": map[string]any{"password": "pw-of-" + x, "user": "user-" + x}}},
		}
		for _, s := range steps {
			if _, err := c.WriteWithContext(ctx, s.path, s.data); err != nil {
				t.Fatalf("vault %s: %v", s.path, err)
			}
		}
	}
	return v
}

// tokensWithPolicy counts the live Vault tokens that carry policy.
func tokensWithPolicy(t *testing.T, v *vaultServer, policy string) int {
	t.Helper()
	c := v.Client().Logical()
	s, err := c.List("auth/token/accessors")
	if err != nil || s == nil {
		t.Fatalf("list accessors: %v", err)
	}
	n := 0
	for _, a := range s.Data["keys"].([]any) {
		info, err := c.Write("auth/token/lookup-accessor", map[string]any{"accessor": a})
		if err != nil || info == nil {
			continue // revoked meanwhile
		}
		pols, _ := info.Data["policies"].([]any)
		for _, p := range pols {
			if p == policy {
				n++
			}
		}
	}
	return n
}

// podOf is the pod of team-X/app-X with a service-account token Vault
// accepts (audience "secretfs") and one for STS.
func podOf(t *testing.T, x, name string) pod {
	t.Helper()
	vaultShared(t) // its seed made the signing key
	sub := "system:serviceaccount:team-" + x + ":app-" + x
	tok, err := signJWT(vaultFix.jwtKey, sub)
	if err != nil {
		t.Fatal(err)
	}
	return pod{Namespace: "team-" + x, Name: name, ServiceAccount: "app-" + x,
		Tokens: map[string]string{"secretfs": tok, "sts.amazonaws.com": tok}}
}

// csiEnv points the provider at kumo (Secrets Manager and STS) and Vault.
func csiEnv(t *testing.T, k *kumo, v *vaultServer) []string {
	env := append(k.Env(t), "AWS_ENDPOINT_URL_STS="+k.Endpoint())
	if v != nil {
		env = append(env, "VAULT_ADDR="+v.Addr())
	}
	return env
}

const roleA = "arn:aws:iam::123456789012:role/app-a"

func TestCSIMixedProvidersModesAndRotation(t *testing.T) {
	t.Parallel()
	k := awsFixture(t)
	v := csiVault(t, "mix")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := k.Client().CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String("csi/mixed/api"), SecretString: aws.String("aws-one")}); err != nil {
		t.Fatal(err)
	}
	p := startCSI(t, csiEnv(t, k, v), "--ttl", "300ms")

	ver, err := p.Client.Version(ctx, &v1alpha1.VersionRequest{Version: "v1alpha1"})
	if err != nil || ver.RuntimeName != "secretfs" || ver.Version != "v1alpha1" || ver.RuntimeVersion == "" {
		t.Fatalf("Version = %v, %v", ver, err)
	}
	params := map[string]string{
		"objects": `
- ref: "aws:csi/mixed/api"
  path: api-key
- ref: "vault:secret/csi/mix/a/db#password"
  path: db/password
  mode: "0400"
- template: |
    DB_USER={{ secret "vault:secret/csi/mix/a/db#user" | quote }}
    API={{ secret "aws:csi/mixed/api" | quote }}
  path: app.env
  mode: "0440"
`,
		"vaultRole": "mix-a", "vaultAudience": "secretfs", "awsRoleArn": roleA,
	}
	target := t.TempDir()
	v1, err := p.mount(t, podOf(t, "a", "web-1"), params, target)
	if err != nil {
		t.Fatalf("mount: %v\n%s", err, p.Stderr())
	}
	for _, w := range []struct {
		path, content string
		mode          os.FileMode
	}{
		{"api-key", "aws-one", 0o644}, // the driver's permission, 420
		{"db/password", "pw-of-a", 0o400},
		{"app.env", "DB_USER=\"user-a\"\nAPI=\"aws-one\"\n", 0o440},
	} {
		if got, mode := readTarget(t, target, w.path); got != w.content || mode != w.mode {
			t.Errorf("%s = %q %o, want %q %o", w.path, got, mode, w.content, w.mode)
		}
	}
	if _, err := os.Readlink(filepath.Join(target, "..data")); err != nil {
		t.Errorf("no ..data link: the files were not written the driver's way: %v", err)
	}
	// A field and a template have no version of their own: an HMAC of
	// the content. A whole AWS secret has its VersionId (checked below).
	for _, id := range []string{"db/password", "app.env"} {
		if !strings.HasPrefix(v1[id], "hmac-sha256:") {
			t.Errorf("the version of %s = %q, want an HMAC", id, v1[id])
		}
	}
	for id, ver := range v1 {
		if strings.Contains(ver, "aws-one") || strings.Contains(ver, "pw-of-a") {
			t.Errorf("the version of %s holds a value: %q", id, ver)
		}
	}

	// Rotate the AWS secret: within the TTL the next republish has it, and
	// only the objects whose content changed have a new version.
	out, err := k.Client().PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String("csi/mixed/api"), SecretString: aws.String("aws-two")})
	if err != nil {
		t.Fatal(err)
	}
	var v2 map[string]string
	eventually(t, 3*time.Second, "the rotation reaches a republish", func() bool {
		v2, err = p.mount(t, podOf(t, "a", "web-1"), params, target)
		got, _ := readTarget(t, target, "api-key")
		return err == nil && got == "aws-two"
	})
	if got, want := v2["api-key"], aws.ToString(out.VersionId); got != want {
		t.Errorf("the AWS object's version = %q, want its VersionId %q", got, want)
	}
	for id, changed := range map[string]bool{"api-key": true, "app.env": true, "db/password": false} {
		if got := v1[id] != v2[id]; got != changed {
			t.Errorf("version of %s changed: %v, want %v (%q then %q)", id, got, changed, v1[id], v2[id])
		}
	}
	if got, _ := readTarget(t, target, "app.env"); got != "DB_USER=\"user-a\"\nAPI=\"aws-two\"\n" {
		t.Errorf("app.env after the rotation = %q", got)
	}
	p.waitLog(t, `msg=mount pod=team-a/web-1`, "one line per mount")
	if strings.Contains(p.Stderr(), "pw-of-a") || strings.Contains(p.Stderr(), "aws-two") {
		t.Errorf("a value reached the log")
	}
}

func TestCSIPerPodVaultIdentity(t *testing.T) {
	t.Parallel()
	k := awsFixture(t)
	v := csiVault(t, "iso")
	p := startCSI(t, csiEnv(t, k, v))
	params := func(x, role string) map[string]string {
		return map[string]string{"objects": "- ref: vault:secret/csi/iso/" + x + "/db#password\n  path: pw\n",
			"vaultRole": role, "vaultAudience": "secretfs"}
	}
	// A reads its own secret, five pods of it, one login.
	for i := range 5 {
		target := t.TempDir()
		if _, err := p.mount(t, podOf(t, "a", fmt.Sprintf("a-%d", i)), params("a", "iso-a"), target); err != nil {
			t.Fatalf("pod a-%d: %v", i, err)
		}
		if got, _ := readTarget(t, target, "pw"); got != "pw-of-a" {
			t.Errorf("pod a-%d read %q", i, got)
		}
	}
	if got := tokensWithPolicy(t, v, "iso-a"); got != 1 {
		t.Errorf("five mounts of one identity made %d Vault tokens, want 1 (cached and renewed, not re-created)", got)
	}
	// B may not read A's secret, though A's value is cached on the node.
	_, err := p.mount(t, podOf(t, "b", "b-0"), params("a", "iso-b"), t.TempDir())
	if got := status.Code(err); got != codes.PermissionDenied {
		t.Errorf("pod B reading A's secret: %v, want PermissionDenied", err)
	}
	// B may not log in as A's role: Vault checks the token's subject.
	_, err = p.mount(t, podOf(t, "b", "b-1"), params("a", "iso-a"), t.TempDir())
	if got := status.Code(err); got != codes.PermissionDenied {
		t.Errorf("pod B logging in as role iso-a: %v, want PermissionDenied", err)
	}
	target := t.TempDir()
	if _, err := p.mount(t, podOf(t, "b", "b-2"), params("b", "iso-b"), target); err != nil {
		t.Fatalf("pod B reading its own: %v", err)
	}
	if got, _ := readTarget(t, target, "pw"); got != "pw-of-b" {
		t.Errorf("pod B read %q", got)
	}
	// Nor may A read B's, now cached for B.
	_, err = p.mount(t, podOf(t, "a", "a-5"), params("b", "iso-a"), t.TempDir())
	if got := status.Code(err); got != codes.PermissionDenied {
		t.Errorf("pod A reading B's secret: %v, want PermissionDenied", err)
	}
	// No role and no --allow-node-credentials: the node's access is not lent.
	_, err = p.mount(t, podOf(t, "a", "a-x"), map[string]string{"objects": "- ref: vault:secret/csi/iso/a/db#password\n  path: pw\n"}, t.TempDir())
	if got := status.Code(err); got != codes.PermissionDenied || !strings.Contains(err.Error(), "vaultRole") {
		t.Errorf("a class without vaultRole: %v, want PermissionDenied naming vaultRole", err)
	}
}

func TestCSIOneBackendCallPerSecretForManyPods(t *testing.T) {
	t.Parallel()
	k := awsFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var objects strings.Builder
	for i := range 3 {
		name := fmt.Sprintf("csi/burst/s%d", i)
		if _, err := k.Client().CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(name), SecretString: aws.String("v")}); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&objects, "- ref: aws:%s\n  path: s%d\n", name, i)
	}
	p := startCSI(t, csiEnv(t, k, nil), "--ttl", "1m")
	params := map[string]string{"objects": objects.String(), "awsRoleArn": roleA}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			if _, err := p.mount(t, podOf(t, "a", fmt.Sprintf("replica-%d", i)), params, t.TempDir()); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a replica's mount: %v", err)
	}
	_, body := httpGet(t, "http://"+p.Health+"/metrics")
	if got := metricValue(body, `secretfs_backend_requests_total{provider="aws",result="ok"}`); got != 3 {
		t.Errorf("20 pods of one identity, 3 secrets: %v backend calls, want 3", got)
	}
	// Another identity (another service account) pays its own calls.
	if _, err := p.mount(t, podOf(t, "b", "other"), map[string]string{"objects": objects.String(), "awsRoleArn": "arn:aws:iam::123456789012:role/app-b"}, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	_, body = httpGet(t, "http://"+p.Health+"/metrics")
	if got := metricValue(body, `secretfs_backend_requests_total{provider="aws",result="ok"}`); got != 6 {
		t.Errorf("after a second identity: %v backend calls, want 6 (values are not shared across identities)", got)
	}
}

func TestCSIOutageServedStale(t *testing.T) {
	t.Parallel()
	k := startKumo(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := k.Client().CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String("csi/outage"), SecretString: aws.String("last-good")}); err != nil {
		t.Fatal(err)
	}
	p := startCSI(t, csiEnv(t, k, nil), "--ttl", "200ms", "--max-stale", "1m", "--timeout", "2s")
	params := map[string]string{"objects": "- ref: aws:csi/outage\n  path: v\n", "awsRoleArn": roleA}
	target := t.TempDir()
	if _, err := p.mount(t, podOf(t, "a", "x"), params, target); err != nil {
		t.Fatal(err)
	}
	k.Stop()
	time.Sleep(300 * time.Millisecond) // past the TTL
	start := time.Now()
	if _, err := p.mount(t, podOf(t, "a", "x"), params, target); err != nil {
		t.Fatalf("during the outage, within --max-stale: %v", err)
	}
	if got, _ := readTarget(t, target, "v"); got != "last-good" {
		t.Errorf("during the outage: %q, want the last good value", got)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("the stale mount took %v", el)
	}
	_, err := p.mount(t, podOf(t, "a", "x"), map[string]string{"objects": "- ref: aws:csi/never-read\n  path: v\n", "awsRoleArn": roleA}, t.TempDir())
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("an uncached secret during the outage: %v, want Unavailable", err)
	}
}

func TestCSIInvalidParameters(t *testing.T) {
	t.Parallel()
	k := awsFixture(t)
	p := startCSI(t, csiEnv(t, k, nil))
	good := "- ref: aws:x\n  path: x\n"
	vaultObj := "- ref: vault:secret/x#a\n  path: x\n"
	for _, tc := range []struct {
		name   string
		params map[string]string
		names  string
	}{
		{"no objects", map[string]string{}, "objects"},
		{"objects not YAML", map[string]string{"objects": "- ref: [\n"}, "objects"},
		{"bad reference", map[string]string{"objects": "- ref: nocolon\n  path: x\n"}, "objects[0].ref"},
		{"absolute path", map[string]string{"objects": "- ref: aws:x\n  path: /etc/passwd\n"}, "objects[0].path"},
		{"path with ..", map[string]string{"objects": "- ref: aws:x\n  path: ../x\n"}, "objects[0].path"},
		{"duplicate path", map[string]string{"objects": good + good}, "objects[1].path"},
		{"bad mode", map[string]string{"objects": good + "  mode: rw\n"}, "objects[0].mode"},
		{"bad template", map[string]string{"objects": "- template: '{{ secret '\n  path: x\n"}, "objects[0].template"},
		{"provider not offered", map[string]string{"objects": "- ref: env:HOME\n  path: x\n"}, "objects"},
		{"vaultAddress", map[string]string{"objects": good, "vaultAddress": "not a url"}, "vaultAddress"},
		{"vaultRole", map[string]string{"objects": good, "vaultRole": "role with spaces"}, "vaultRole"},
		{"vaultAuthMount", map[string]string{"objects": good, "vaultAuthMount": "/k8s/"}, "vaultAuthMount"},
		{"vaultNamespace", map[string]string{"objects": good, "vaultNamespace": "a b"}, "vaultNamespace"},
		{"vaultAudience", map[string]string{"objects": good, "vaultAudience": "a b"}, "vaultAudience"},
		{"awsRegion", map[string]string{"objects": good, "awsRegion": "moon-1a"}, "awsRegion"},
		{"awsRoleArn", map[string]string{"objects": good, "awsRoleArn": "app"}, "awsRoleArn"},
		{"awsAudience", map[string]string{"objects": good, "awsAudience": "a b"}, "awsAudience"},
		{"unknown parameter", map[string]string{"objects": good, "awsRolearn": roleA}, "awsRolearn"},
		{"a template past the limits", map[string]string{"objects": "- template: '{{ repeat 100000000 \"x\" }}'\n  path: x\n"}, "objects[0].template"},
		{"no token for the audience", map[string]string{"objects": good, "awsRoleArn": roleA, "awsAudience": "elsewhere"}, "csi.storage.k8s.io/serviceAccount.tokens"},
		// A class chose where a pod's token went, and for which audience.
		{"vaultAddress the node does not list", map[string]string{"objects": vaultObj, "vaultRole": "r", "vaultAddress": "https://attacker.example:8200"}, "vaultAddress"},
		{"vaultAudience of AWS", map[string]string{"objects": vaultObj, "vaultRole": "r", "vaultAudience": "sts.amazonaws.com"}, "vaultAudience"},
		{"awsAudience of Vault", map[string]string{"objects": good, "awsRoleArn": roleA, "awsAudience": "vault"}, "awsAudience"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.mount(t, podOf(t, "a", "bad"), tc.params, t.TempDir())
			if got := status.Code(err); got != codes.InvalidArgument {
				t.Fatalf("code = %v (%v), want InvalidArgument", got, err)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "parameter "+tc.names) {
				t.Errorf("message %q does not name parameter %s", msg, tc.names)
			}
		})
	}
}

func TestCSIProviderSocketHealthAndEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "secretfs.sock")
	// A socket left by a crash is taken over...
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	// The config file and SECRETFS_* apply as they do to mount.
	conf := filepath.Join(dir, "secretfs.yaml")
	os.WriteFile(conf, []byte("ttl: 42s\nenv-allow: [SFS_CSI_*]\n"), 0o600)
	p := launchCSI(t, sock, []string{"SFS_CSI_ENV=from-the-node", "SFS_OTHER=x", "SECRETFS_MAX_STALE=7m"}, "--allow-env", "--config", conf)
	p.waitLog(t, "ttl=42s", "the config file's ttl")
	p.waitLog(t, "max_stale=7m0s", "SECRETFS_MAX_STALE")
	// ...a live one is not.
	_, stderr, code := secretfs(t, nil, "csi-provider", "--endpoint", sock)
	if code == 0 || !strings.Contains(stderr, "served by another process") {
		t.Errorf("a second provider on a live socket: exit %d, %q", code, stderr)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if st, body := httpGet(t, "http://"+p.Health+path); st != 200 {
			t.Errorf("%s = %d %q", path, st, body)
		}
	}
	target := t.TempDir()
	if _, err := p.mount(t, pod{Namespace: "n", Name: "p", ServiceAccount: "s"}, map[string]string{"objects": "- ref: env:SFS_CSI_ENV\n  path: e\n"}, target); err != nil {
		t.Fatalf("env with --allow-env: %v", err)
	}
	if got, _ := readTarget(t, target, "e"); got != "from-the-node" {
		t.Errorf("env = %q", got)
	}
	_, err = p.mount(t, pod{Namespace: "n", Name: "p", ServiceAccount: "s"}, map[string]string{"objects": "- ref: env:SFS_OTHER\n  path: e\n"}, t.TempDir())
	if got := status.Code(err); got != codes.NotFound {
		t.Errorf("a variable outside the file's env-allow: %v, want NotFound", err)
	}
	if st, _ := os.Stat(sock); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want 0600", st)
	}
	if err := p.terminate(); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, p.Stderr())
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("the socket is left after SIGTERM")
	}
	// Usage errors.
	for _, args := range [][]string{{"csi-provider"}, {"csi-provider", "--endpoint", sock, "--exec-provider", "x=/bin/true"}} {
		if _, stderr, code := secretfs(t, nil, args...); code != 2 {
			t.Errorf("secretfs %v: exit %d, %q; want 2", args, code, stderr)
		}
	}
}
