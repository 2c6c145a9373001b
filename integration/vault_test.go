package integration

import (
	"context"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestVaultValues(t *testing.T) {
	v := vaultShared(t)
	d := vaultMount(t, v, "root")
	tests := []struct{ path, want string }{
		{"vault/secret/myapp", `{"password":"s3cr3t pw","port":5432,"user":"app"}`},
		{"vault/secret/myapp#password", "s3cr3t pw"},
		{"vault/secret/myapp#port", "5432"},
		{"vault/secret/team/app/db#password", "db-pw"},
		{"vault/secret/versioned#v", "three"},
		{"vault/secret/versioned@1#v", "one"},
		{"vault/secret/versioned@2", `{"v":"two"}`},
		{"vault/secret/deleted@1#v", "a"},
		{"vault/secret/destroyed#v", "y"},
		{"vault/secret/app@#v", "app-itself"},
		{"vault/secret/app/child#v", "c"},
		{"vault/kv1/plain", `{"api_key":"kv1-key"}`},
		{"vault/kv1/plain#api_key", "kv1-key"},
		{"vault/kv1/nested/x#a", "b"},
		{"vault/cubbyhole/note#text", "in the cubbyhole"}, // not KV: a plain logical read
	}
	for _, tt := range tests {
		got, err := os.ReadFile(d.Path(tt.path))
		if err != nil || string(got) != tt.want {
			t.Errorf("cat %s = %q, %v; want %q", tt.path, got, err, tt.want)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(d.Path(tt.path), &st); err != nil || st.Size != int64(len(tt.want)) {
			t.Errorf("stat %s: size %d, %v; want %d", tt.path, st.Size, err, len(tt.want))
		}
	}
	st, err := os.Stat(d.Path("vault/secret/myapp"))
	if want := vaultFix.created["myapp"]; err != nil || !st.ModTime().Equal(want.Truncate(time.Second)) && !st.ModTime().Equal(want) {
		t.Errorf("mtime of secret/myapp = %v, %v; want created_time %v", st.ModTime(), err, want)
	}
	for _, p := range []string{
		"vault/secret/nope", "vault/secret/deleted", "vault/secret/destroyed@1", "vault/secret/versioned@9",
		"vault/secret/versioned@x", "vault/secret/myapp#nope", "vault/kv1/plain@1", "vault/kv1/nope",
		"vault/nomount/x",
	} {
		_, err := os.ReadFile(d.Path(p))
		wantErrno(t, p, err, syscall.ENOENT)
	}
}

func TestVaultListings(t *testing.T) {
	v := vaultShared(t)
	d := vaultMount(t, v, "root")
	tests := []struct {
		dir  string
		want []string
	}{
		{"vault", []string{"kv1", "secret"}},
		{"vault/secret", []string{"app", "app@", "deleted", "destroyed", "myapp", "rotate", "team", "versioned"}},
		{"vault/secret/team", []string{"app", "web"}},
		{"vault/secret/team/app", []string{"db"}},
		{"vault/kv1", []string{"nested", "plain"}},
	}
	for _, tt := range tests {
		if got := readDir(t, d.Path(tt.dir)); !slices.Equal(got, tt.want) {
			t.Errorf("ls %s = %q, want %q", tt.dir, got, tt.want)
		}
	}
	out, _, code := secretfs(t, v.Env(t, "root"), "ls", "--providers", "vault", "vault:secret/team")
	if code != 0 || out != "app/\nweb\n" {
		t.Errorf("secretfs ls vault:secret/team = %q, exit %d", out, code)
	}
}

func TestVaultGetCommand(t *testing.T) {
	v := vaultShared(t)
	env := v.Env(t, "root")
	tests := []struct {
		ref      string
		want     string
		wantCode int
	}{
		{"vault:secret/myapp#password", "s3cr3t pw", 0},
		{"vault:secret/versioned@1#v", "one", 0},
		{"vault:kv1/plain#api_key", "kv1-key", 0},
		{"vault:secret/nope", "", 3},
		{"vault:secret/deleted", "", 3},
	}
	for _, tt := range tests {
		out, stderr, code := secretfs(t, env, "get", "--providers", "vault", tt.ref)
		if out != tt.want || code != tt.wantCode {
			t.Errorf("get %s = %q, exit %d; want %q, %d (stderr %q)", tt.ref, out, code, tt.want, tt.wantCode, stderr)
		}
	}
	// A bad token is a clear error, and never printed.
	_, stderr, code := secretfs(t, v.Env(t, "not-a-real-token-xyz"), "get", "--providers", "vault", "vault:secret/myapp")
	if code == 0 || strings.Contains(stderr, "not-a-real-token-xyz") {
		t.Errorf("bad token: exit %d, stderr %q; want a failure that does not show the token", code, stderr)
	}
}

func TestVaultAppRoleAndPolicy(t *testing.T) {
	v := vaultShared(t)
	d := vaultMount(t, v, "", approleArgs(t)...)
	if got, err := os.ReadFile(d.Path("vault/secret/myapp#user")); err != nil || string(got) != "app" {
		t.Errorf("allowed read: %q, %v", got, err)
	}
	_, err := os.ReadFile(d.Path("vault/secret/denied-leaf"))
	wantErrno(t, "denied read in a listable directory", err, syscall.EACCES)
	_, err = os.ReadDir(d.Path("vault/kv1"))
	wantErrno(t, "denied list", err, syscall.EACCES)
	_, err = os.ReadFile(d.Path("vault/kv1/plain"))
	wantErrno(t, "read in a denied mount", err, syscall.EACCES)
	if logs := d.Stderr(); strings.Contains(logs, vaultFix.secretID) || strings.Contains(logs, vaultFix.roleID) {
		t.Error("the AppRole credentials reached the log")
	}
}

func TestVaultLeastPrivilegePolicy(t *testing.T) {
	v := vaultShared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := v.Client().Logical().WriteWithContext(ctx, "auth/token/create", map[string]any{
		"policies": []string{"secretfs-narrow"}, "no_default_policy": false, "ttl": "1h",
	})
	if err != nil {
		t.Fatal(err)
	}
	d := vaultMount(t, v, s.Auth.ClientToken)
	// No list anywhere, no read of secret/team or secret/team/app: the
	// path is still reachable.
	if got, err := os.ReadFile(d.Path("vault/secret/team/app/db#password")); err != nil || string(got) != "db-pw" {
		t.Errorf("read with a one-secret policy: %q, %v", got, err)
	}
	_, err = os.ReadDir(d.Path("vault/secret/team"))
	wantErrno(t, "list without the list capability", err, syscall.EACCES)
	out, _, code := secretfs(t, v.Env(t, s.Auth.ClientToken), "get", "--providers", "vault", "vault:secret/team/app/db#password")
	if code != 0 || out != "db-pw" {
		t.Errorf("get with a one-secret policy: %q, exit %d", out, code)
	}
}

func TestVaultMountsFlag(t *testing.T) {
	v := vaultShared(t)
	d := vaultMount(t, v, "", append(approleArgs(t), "--vault-mounts", "secret")...)
	if got := readDir(t, d.Path("vault")); !slices.Equal(got, []string{"secret"}) {
		t.Errorf("ls vault with --vault-mounts secret = %q, want [secret]", got)
	}
	if got, err := os.ReadFile(d.Path("vault/secret/team/app/db#password")); err != nil || string(got) != "db-pw" {
		t.Errorf("read: %q, %v", got, err)
	}
}

func TestVaultReloginAfterRevocation(t *testing.T) {
	v := vaultShared(t)
	d := vaultMount(t, v, "", append(approleArgs(t), "--ttl", "200ms")...)
	p := d.Path("vault/secret/team/web#token")
	if got, err := os.ReadFile(p); err != nil || string(got) != "web-token" {
		t.Fatalf("before revocation: %q, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := v.Client().Logical().WriteWithContext(ctx, "sys/leases/revoke-prefix/auth/approle/login", nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // past the cache TTL, so the next read asks Vault
	if got, err := os.ReadFile(p); err != nil || string(got) != "web-token" {
		t.Errorf("after revocation: %q, %v; want the value (a new login, no error)", got, err)
	}
	d.waitLog(t, "logging in again", "no re-login logged")
}

func TestVaultTokenRenewal(t *testing.T) {
	v := vaultShared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := v.Client().Logical().WriteWithContext(ctx, "auth/token/create", map[string]any{
		"policies": []string{"secretfs-app"}, "ttl": "3s", "explicit_max_ttl": "5m", "renewable": true, "no_parent": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	token := s.Auth.ClientToken
	tokenFile := writeFile(t, "token", token)
	d := vaultMount(t, v, "", "--vault-token-file", tokenFile, "--ttl", "100ms")
	p := d.Path("vault/secret/myapp#user")
	// Read for three token TTLs: without renewal the token would expire
	// after 3s and reads would fail with EACCES.
	end := time.Now().Add(10 * time.Second)
	reads := 0
	for time.Now().Before(end) {
		got, err := os.ReadFile(p)
		if err != nil || string(got) != "app" {
			t.Fatalf("read %d at %v: %q, %v", reads, time.Until(end), got, err)
		}
		reads++
		time.Sleep(150 * time.Millisecond)
	}
	if n := strings.Count(d.Stderr(), "token renewed"); n < 2 {
		t.Errorf("token renewed %d times in 10s of a 3s TTL, want at least 2", n)
	}
	if strings.Contains(d.Stderr(), token) {
		t.Error("the token reached the log")
	}
}

func TestVaultJWTAndKubernetesLogin(t *testing.T) {
	v := vaultShared(t)
	for _, method := range []string{"jwt", "kubernetes"} {
		t.Run(method, func(t *testing.T) {
			jwt, err := signJWT(vaultFix.jwtKey, "workload-"+method)
			if err != nil {
				t.Fatal(err)
			}
			d := vaultMount(t, v, "", "--vault-auth", method, "--vault-role", "secretfs", "--vault-jwt-file", writeFile(t, "jwt", jwt))
			if got, err := os.ReadFile(d.Path("vault/secret/myapp#password")); err != nil || string(got) != "s3cr3t pw" {
				t.Errorf("read after %s login: %q, %v", method, got, err)
			}
			_, err = os.ReadFile(d.Path("vault/kv1/plain"))
			wantErrno(t, "the role's policy denies kv1", err, syscall.EACCES)
			if strings.Contains(d.Stderr(), jwt) {
				t.Error("the JWT reached the log")
			}
		})
	}
	bad, _ := signJWT(vaultFix.jwtKey, "x")
	bad = bad[:len(bad)-4] + "AAAA" // a broken signature
	_, stderr, code := secretfs(t, v.Env(t, ""), "get", "--providers", "vault", "--vault-auth", "jwt", "--vault-role", "secretfs",
		"--vault-jwt-file", writeFile(t, "jwt", bad), "vault:secret/myapp")
	if code == 0 || strings.Contains(stderr, bad) {
		t.Errorf("bad JWT: exit %d, stderr %q; want a failure that does not show the JWT", code, stderr)
	}
}

func TestVaultRotation(t *testing.T) {
	v := vaultShared(t)
	d := vaultMount(t, v, "root", "--ttl", "300ms")
	p := d.Path("vault/secret/rotate#v")
	if got, err := os.ReadFile(p); err != nil || string(got) != "first" {
		t.Fatalf("before: %q, %v", got, err)
	}
	next := "the second version, longer"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := v.Client().Logical().WriteWithContext(ctx, "secret/data/rotate", map[string]any{"data": map[string]any{"v": next}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the new version is read", func() bool {
		got, err := os.ReadFile(p)
		return err == nil && string(got) == next
	})
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil || st.Size != int64(len(next)) {
		t.Errorf("size after rotation %d, %v; want %d", st.Size, err, len(next))
	}
}

func TestVaultServerDown(t *testing.T) {
	v := startVault(t, 0)
	defer v.Stop()
	write := func(v *vaultServer, val string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := v.Client().Logical().WriteWithContext(ctx, "secret/data/fault", map[string]any{"data": map[string]any{"v": val}}); err != nil {
			t.Fatal(err)
		}
	}
	write(v, "cached")
	d := vaultMount(t, v, "root", "--ttl", "300ms", "--max-stale", "1h", "--timeout", "3s")
	p := d.Path("vault/secret/fault#v")
	if got, err := os.ReadFile(p); err != nil || string(got) != "cached" {
		t.Fatalf("warm-up: %q, %v", got, err)
	}
	v.Stop()
	time.Sleep(500 * time.Millisecond) // past the TTL
	for range 3 {
		if got, err := os.ReadFile(p); err != nil || string(got) != "cached" {
			t.Fatalf("while down: %q, %v; want the cached value", got, err)
		}
	}
	start := time.Now()
	_, err := os.ReadFile(d.Path("vault/secret/never-read"))
	wantErrno(t, "uncached while down", err, syscall.EIO)
	if el := time.Since(start); el > 15*time.Second { // hang detector: --timeout 3s
		t.Errorf("uncached read while down took %v", el)
	}
	v2 := startVault(t, v.Port) // a new dev server: empty, same root token
	defer v2.Stop()
	write(v2, "recovered")
	eventually(t, 20*time.Second, "reads recover", func() bool {
		got, err := os.ReadFile(p)
		return err == nil && string(got) == "recovered"
	})
}
