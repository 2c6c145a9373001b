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

	"github.com/secretfs/secretfs/integration/backends/fakecloud"
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
	t.Cleanup(f.Close)
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
// --allow-node-credentials.
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
	impersonating := map[string]string{"objects": objects["objects"], "gcpServiceAccount": "reader-a@test-project.iam.gserviceaccount.com"}
	if _, err := p.mount(t, pod{Namespace: "team-a", Name: "gcp-2", ServiceAccount: "app-a"}, impersonating, t.TempDir()); err == nil {
		t.Error("a class impersonating a service account with the node's credentials was served")
	}
	otherProject := map[string]string{"objects": objects["objects"], "gcpProject": "other-project"}
	if _, err := p.mount(t, pod{Namespace: "team-a", Name: "gcp-4", ServiceAccount: "app-a"}, otherProject, t.TempDir()); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a class sending the node's credentials to another project: %v, want PermissionDenied", err)
	}

	strict := startCSI(t, nil, g.args()...)
	if _, err := strict.mount(t, pod{Namespace: "team-a", Name: "gcp-3", ServiceAccount: "app-a"}, objects, t.TempDir()); status.Code(err) != codes.PermissionDenied {
		t.Errorf("without --allow-node-credentials: %v, want PermissionDenied", err)
	}
}

// A pod reads as itself: its service-account token is exchanged at
// (fake) Google STS for its class's workload identity pool provider, and
// the federated token reads what IAM grants the pod's principal, or
// impersonates the class's service account. Secret Manager and STS are
// served over TLS that the provider trusts through SSL_CERT_FILE, and the
// fake checks every call's bearer token.
func TestCSIGCPPodIdentity(t *testing.T) {
	t.Parallel()
	f := gcpfake.New("test-project")
	addr, err := f.StartTLS("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	base, err := f.ServeSTS()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := f.CAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const provider = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/k8s-pool/providers/cluster-1"
	audience := "https:" + provider
	f.Pool(provider, audience)
	f.Put("a-db", []byte(`{"password":"pw-a"}`))
	f.Put("b-db", []byte("pw-b"))
	subA, subB := "system:serviceaccount:team-a:app-a", "system:serviceaccount:team-b:app-b"
	f.Grant(f.Subject(subA), "a-db")
	const reader = "reader-b@test-project.iam.gserviceaccount.com"
	f.AllowImpersonation(f.Subject(subB), reader, true)
	f.Grant("serviceAccount:"+reader, "b-db")

	// The Google libraries' own debug logging (tokens, payloads) stays off
	// whatever the environment says.
	p := startCSI(t, []string{"SSL_CERT_FILE=" + ca, "GOOGLE_SDK_GO_LOGGING_LEVEL=debug"}, "--providers", "gcp", "--gcp-project", "test-project",
		"--gcp-endpoint", addr, "--gcp-sts-url", base+"/v1/token", "--gcp-iam-credentials-url", base, "--ttl", "300ms")
	podA := pod{Namespace: "team-a", Name: "a-1", ServiceAccount: "app-a", Tokens: map[string]string{audience: fakecloud.MakeJWT("", subA, audience)}}
	podB := pod{Namespace: "team-b", Name: "b-1", ServiceAccount: "app-b", Tokens: map[string]string{audience: fakecloud.MakeJWT("", subB, audience)}}
	class := func(ref string, more ...string) map[string]string {
		m := map[string]string{"objects": "- ref: " + ref + "\n  path: s\n", "gcpWorkloadIdentityProvider": provider}
		for i := 0; i+1 < len(more); i += 2 {
			m[more[i]] = more[i+1]
		}
		return m
	}

	t.Run("direct access", func(t *testing.T) {
		target := t.TempDir()
		if _, err := p.mount(t, podA, class("gcp:a-db#password"), target); err != nil {
			t.Fatalf("pod a reading what its principal is granted: %v", err)
		}
		if got, _ := readTarget(t, target, "s"); got != "pw-a" {
			t.Errorf("s = %q, want pw-a", got)
		}
		if got := f.Calls("sts.token"); got != 1 {
			t.Errorf("%d token exchanges, want 1", got)
		}
		if _, err := p.mount(t, podA, class("gcp:b-db"), t.TempDir()); status.Code(err) != codes.PermissionDenied {
			t.Errorf("pod a reading b-db: %v, want PermissionDenied", err)
		}
	})
	t.Run("impersonation", func(t *testing.T) {
		target := t.TempDir()
		if _, err := p.mount(t, podB, class("gcp:b-db", "gcpServiceAccount", reader), target); err != nil {
			t.Fatalf("pod b impersonating %s: %v", reader, err)
		}
		if got, _ := readTarget(t, target, "s"); got != "pw-b" {
			t.Errorf("s = %q, want pw-b", got)
		}
		if got := f.Calls("generateAccessToken"); got < 1 {
			t.Errorf("%d generateAccessToken calls, want at least 1", got)
		}
		// Pod a may not impersonate the reader: no access, not the value.
		if _, err := p.mount(t, podA, class("gcp:b-db", "gcpServiceAccount", reader), t.TempDir()); err == nil {
			t.Error("pod a impersonated a service account it was not let")
		}
	})
	t.Run("a binding removed is refused, not served stale", func(t *testing.T) {
		// Tokens of a second: the exchange runs again at the next call.
		f.TokenLifetime(time.Second)
		defer f.TokenLifetime(0)
		subC := "system:serviceaccount:team-c:app-c"
		const readerC = "reader-c@test-project.iam.gserviceaccount.com"
		f.AllowImpersonation(f.Subject(subC), readerC, true)
		f.Grant("serviceAccount:"+readerC, "b-db")
		podC := pod{Namespace: "team-c", Name: "c-1", ServiceAccount: "app-c", Tokens: map[string]string{audience: fakecloud.MakeJWT("", subC, audience)}}
		if _, err := p.mount(t, podC, class("gcp:b-db", "gcpServiceAccount", readerC), t.TempDir()); err != nil {
			t.Fatalf("pod c impersonating %s: %v", readerC, err)
		}
		f.AllowImpersonation(f.Subject(subC), readerC, false)
		time.Sleep(1200 * time.Millisecond) // past the TTL and the token's life
		if _, err := p.mount(t, podC, class("gcp:b-db", "gcpServiceAccount", readerC), t.TempDir()); status.Code(err) != codes.PermissionDenied {
			t.Errorf("pod c once its binding is removed: %v, want PermissionDenied (never the cached value)", err)
			t.Logf("calls: sts %d iam %d\n%s", f.Calls("sts.token"), f.Calls("generateAccessToken"), p.Stderr())
		}
	})
	t.Run("audiences", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			params map[string]string
		}{
			{"another backend's audience", class("gcp:a-db", "gcpAudience", "sts.amazonaws.com")},
			{"no token for the audience", class("gcp:a-db", "gcpAudience", "elsewhere")},
			{"another pool provider", class("gcp:a-db", "gcpWorkloadIdentityProvider", strings.Replace(provider, "cluster-1", "cluster-2", 1), "gcpAudience", audience)},
			{"not a pool provider", class("gcp:a-db", "gcpWorkloadIdentityProvider", "https://evil.example/token")},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := p.mount(t, podA, tc.params, t.TempDir()); err == nil {
					t.Errorf("served")
				}
			})
		}
	})
	t.Run("the token stays out of the log", func(t *testing.T) {
		if strings.Contains(p.Stderr(), podA.Tokens[audience]) || strings.Contains(p.Stderr(), "ya29.fake-") {
			t.Error("a token reached csi-provider's log")
		}
	})
}

// A node operator's STS and IAM credentials URLs must be https: a pod's
// token goes there.
func TestGCPFederationURLsMustBeHTTPS(t *testing.T) {
	t.Parallel()
	for _, flag := range []string{"--gcp-sts-url", "--gcp-iam-credentials-url"} {
		t.Run(flag, func(t *testing.T) {
			_, out, code := secretfs(t, nil, "get", "--providers", "gcp", "--gcp-project", "p", flag, "http://sts.example/v1/token", "gcp:x")
			if code != 2 || !strings.Contains(out, flag) {
				t.Errorf("exit %d, %q; want 2 naming %s", code, out, flag)
			}
		})
	}
}
