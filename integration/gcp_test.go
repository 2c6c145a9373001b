package integration

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gcpfake "github.com/secretfs/secretfs/integration/backends/gcp"
)

// gcpServer is a fake Secret Manager of its own on loopback (see
// integration/backends/gcp), stopped when the test ends.
type gcpServer struct {
	*gcpfake.Fake
	addr string
}

func startGCP(t *testing.T) *gcpServer {
	t.Helper()
	f := gcpfake.New("test-project")
	addr, err := f.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return &gcpServer{f, addr}
}

// args are the flags that point secretfs at the fake.
func (g *gcpServer) args() []string {
	return []string{"--providers", "gcp", "--gcp-project", "test-project", "--gcp-endpoint", g.addr, "--gcp-insecure"}
}

func gcpMount(t *testing.T, g *gcpServer, args ...string) *daemon {
	return mount(t, nil, append(g.args(), args...)...)
}

// Reads through the real client library: the latest version and numbered
// ones, fields, a disabled and a destroyed version (not found), the flat
// listing across pages, a payload whose checksum does not match (never
// served), and get's exit codes.
func TestGCPReads(t *testing.T) {
	t.Parallel()
	g := startGCP(t)
	g.MaxPage = 7 // the listing takes several pages
	g.Put("db", []byte(`{"user":"app","password":"pw-1"}`))
	g.Put("db", []byte(`{"user":"app","password":"pw-2"}`))
	g.Put("tls-key", []byte("binary\x00key"))
	g.Put("old", []byte("o1"))
	g.Put("old", []byte("o2"))
	g.Put("corrupt", []byte("bad"))
	g.Corrupt("corrupt")
	for i := range 20 {
		g.Put(fmt.Sprintf("bulk_%02d", i), []byte("b"))
	}
	d := gcpMount(t, g)

	for _, tc := range []struct{ path, want string }{
		{"gcp/db#password", "pw-2"},
		{"gcp/db@1#password", "pw-1"},
		{"gcp/db@latest#user", "app"},
		{"gcp/tls-key", "binary\x00key"},
	} {
		if got, err := os.ReadFile(d.Path(tc.path)); err != nil || string(got) != tc.want {
			t.Errorf("cat %s = %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
	g.SetState("old", 1, secretmanagerpb.SecretVersion_DISABLED)
	g.SetState("old", 2, secretmanagerpb.SecretVersion_DESTROYED)
	for _, p := range []string{"gcp/old@1", "gcp/old@2", "gcp/old", "gcp/db@3", "gcp/db@nope", "gcp/missing", "gcp/a/b"} {
		_, err := os.ReadFile(d.Path(p))
		wantErrno(t, "cat "+p, err, syscall.ENOENT)
	}
	_, err := os.ReadFile(d.Path("gcp", "corrupt"))
	wantErrno(t, "a payload whose checksum does not match", err, syscall.EIO)
	d.waitLog(t, "checksum mismatch", "the mismatch is logged")

	names := readDir(t, d.Path("gcp"))
	if len(names) != 24 || !slices.Contains(names, "bulk_19") || !slices.Contains(names, "db") {
		t.Errorf("ls gcp = %d names %q; want the 24 secrets, across pages of 7", len(names), names)
	}

	for _, tc := range []struct {
		ref  string
		code int
	}{{"gcp:db#password", 0}, {"gcp:missing", 3}, {"gcp:old@1", 3}, {"gcp:corrupt", 6}} {
		_, stderr, code := secretfs(t, nil, append([]string{"get"}, append(g.args(), tc.ref)...)...)
		if code != tc.code {
			t.Errorf("get %s: exit %d, want %d (%s)", tc.ref, code, tc.code, stderr)
		}
	}
	if strings.Contains(d.Stderr(), "pw-2") {
		t.Error("the log holds a secret value")
	}
}

// Errors: denied is EACCES (exit 5); throttled and an outage serve the
// last good value; a closed endpoint and missing credentials are
// unavailable (exit 6) within --timeout; plaintext to a non-loopback
// address is refused.
func TestGCPFailures(t *testing.T) {
	t.Parallel()
	g := startGCP(t)
	g.Put("svc-key", []byte("cached"))
	d := gcpMount(t, g, "--ttl", "300ms")
	p := d.Path("gcp", "svc-key")
	if got, err := os.ReadFile(p); err != nil || string(got) != "cached" {
		t.Fatalf("first read %q, %v", got, err)
	}
	for _, code := range []codes.Code{codes.ResourceExhausted, codes.Unavailable, codes.Internal, codes.Unauthenticated} {
		g.Fail(code)
		time.Sleep(400 * time.Millisecond) // past the TTL
		start := time.Now()
		got, err := os.ReadFile(p)
		if err != nil || string(got) != "cached" || time.Since(start) > 3*time.Second {
			t.Errorf("with every call failing %s: read %q, %v after %v; want the last good value", code, got, err, time.Since(start))
		}
		g.Fail(codes.OK)
	}
	g.Fail(codes.PermissionDenied)
	_, stderr, code := secretfs(t, nil, append([]string{"get"}, append(g.args(), "gcp:svc-key")...)...)
	if code != 5 {
		t.Errorf("get while denied: exit %d, want 5 (%s)", code, stderr)
	}
	g.Fail(codes.OK)

	// The server goes away: served stale, then back.
	g.Stop()
	time.Sleep(400 * time.Millisecond)
	if got, err := os.ReadFile(p); err != nil || string(got) != "cached" {
		t.Errorf("with the server stopped: %q, %v; want the last good value", got, err)
	}
	if _, err := g.Start(g.addr); err != nil {
		t.Fatal(err)
	}
	g.Put("svc-key", []byte("after"))
	eventually(t, 15*time.Second, "the new value once the server is back", func() bool {
		got, err := os.ReadFile(p)
		return err == nil && string(got) == "after"
	})

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
	}{
		{"a closed endpoint", nil, []string{"--gcp-endpoint", "127.0.0.1:1", "--gcp-insecure"}, 6},
		{"no credentials", []string{"GOOGLE_APPLICATION_CREDENTIALS=/nonexistent/adc.json", "GCE_METADATA_HOST=127.0.0.1:1"}, nil, 6},
		{"plaintext elsewhere", nil, []string{"--gcp-endpoint", "example.com:443", "--gcp-insecure"}, 2},
		{"no project", nil, []string{"--gcp-project", ""}, 2},
	} {
		start := time.Now()
		args := append([]string{"get", "--providers", "gcp", "--gcp-project", "test-project", "--timeout", "2s"}, tc.args...)
		_, stderr, code := secretfs(t, tc.env, append(args, "gcp:svc-key")...)
		if took := time.Since(start); code != tc.code || took > 8*time.Second {
			t.Errorf("%s: exit %d after %v, %q; want %d within the timeout", tc.name, code, took.Round(time.Millisecond), stderr, tc.code)
		}
	}
}

// What a first read costs at 1,000 secrets: a lookup lists the project
// once (one page) and reads the one secret; reading every secret is one
// read each (Secret Manager has no batch read).
func TestGCPCallsAtScale(t *testing.T) {
	t.Parallel()
	g := startGCP(t)
	const n = 1000
	for i := range n {
		g.Put(fmt.Sprintf("s%04d", i), []byte(fmt.Sprint(i)))
	}
	d := gcpMount(t, g)
	if got, err := os.ReadFile(d.Path("gcp", "s0500")); err != nil || string(got) != "500" {
		t.Fatalf("first read %q, %v", got, err)
	}
	list, access := g.Calls("ListSecrets"), g.Calls("AccessSecretVersion")
	t.Logf("first read at %d secrets: %d ListSecrets, %d AccessSecretVersion", n, list, access)
	if list > 1 || access != 1 {
		t.Errorf("first read at %d secrets: %d ListSecrets, %d AccessSecretVersion; want at most 1 and 1", n, list, access)
	}
	if names := readDir(t, d.Path("gcp")); len(names) != n {
		t.Errorf("ls gcp: %d names, want %d", len(names), n)
	}
	if got := g.Calls("ListSecrets"); got > 1 {
		t.Errorf("ls after the lookup: %d ListSecrets in all, want the one (cached)", got)
	}
}

// csi-provider offers gcp with the node's credentials, only with
// --allow-node-credentials; a class that asks for a pod's own Google
// identity is refused (not offered yet).
func TestCSIGCPNodeCredentials(t *testing.T) {
	t.Parallel()
	g := startGCP(t)
	g.Put("csi-db", []byte(`{"password":"csi-pw"}`))
	objects := map[string]string{"objects": "- ref: gcp:csi-db#password\n  path: pw\n"}

	p := startCSI(t, nil, append(g.args(), "--allow-node-credentials")...)
	target := t.TempDir()
	if _, err := p.mount(t, pod{Namespace: "team-a", Name: "gcp-1", ServiceAccount: "app-a"}, objects, target); err != nil {
		t.Fatalf("a class reading gcp with the node's credentials: %v", err)
	}
	if got, _ := readTarget(t, target, "pw"); got != "csi-pw" {
		t.Errorf("pw = %q, want csi-pw", got)
	}
	withIdentity := map[string]string{"objects": objects["objects"], "gcpWorkloadIdentityProvider": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k"}
	if _, err := p.mount(t, pod{Namespace: "team-a", Name: "gcp-2", ServiceAccount: "app-a"}, withIdentity, t.TempDir()); err == nil {
		t.Error("a class asking for a pod's own Google identity was served")
	}

	strict := startCSI(t, nil, g.args()...)
	if _, err := strict.mount(t, pod{Namespace: "team-a", Name: "gcp-3", ServiceAccount: "app-a"}, objects, t.TempDir()); status.Code(err) != codes.PermissionDenied {
		t.Errorf("without --allow-node-credentials: %v, want PermissionDenied", err)
	}
}
