package integration

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	azfake "github.com/secretfs/secretfs/integration/backends/azure"
	"github.com/secretfs/secretfs/integration/backends/fakecloud"
)

// azureServer is a fake Key Vault and Entra tenant of its own (see
// integration/backends/azure), closed when the test ends.
type azureServer struct {
	*azfake.Fake
	env []string // sends the SDK to the fake, as the node's application
}

const (
	azureTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	azureClient = "00000000-0000-0000-0000-0000000000a1"
)

func startAzure(t *testing.T) *azureServer {
	t.Helper()
	f, err := azfake.New("test-vault", azureTenant)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	f.App(azureClient, "node-secret")
	f.Grant(azureClient)
	env, err := f.Env(t.TempDir(), azureClient)
	if err != nil {
		t.Fatal(err)
	}
	return &azureServer{f, env}
}

// args are the flags that read the fake's vault.
func (a *azureServer) args() []string {
	return []string{"--providers", "azure", "--azure-vault", a.Vault}
}

func azureMount(t *testing.T, a *azureServer, args ...string) *daemon {
	return mount(t, a.env, append(a.args(), args...)...)
}

// Reads through the real SDK: the current version and given ones, fields,
// the flat listing across pages, names served only under the spelling the
// vault lists, disabled, expired, not-yet-valid and deleted secrets (not
// found), and get's exit codes.
func TestAzureReads(t *testing.T) {
	t.Parallel()
	a := startAzure(t)
	a.MaxPage = 7 // the listing takes several pages
	v1 := a.Put("db", `{"user":"app","password":"pw-1"}`)
	a.Put("db", `{"user":"app","password":"pw-2"}`)
	a.Put("Mixed-Case", "mc")
	for _, n := range []string{"off", "expired", "early", "gone"} {
		a.Put(n, n+"-value")
	}
	for i := range 20 {
		a.Put(fmt.Sprintf("bulk-%02d", i), "b")
	}
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	// A staged rotation: the current version is not valid yet, the last
	// good one is pinned.
	good := a.Put("staged", "good")
	a.Put("staged", "next")
	a.Set("staged", true, nil, &future)
	a.Set("off", false, nil, nil)
	a.Set("expired", true, &past, nil)
	a.Set("early", true, nil, &future)
	a.Delete("gone")
	d := azureMount(t, a, "--ttl", "1s")

	for _, tc := range []struct{ path, want string }{
		{"azure/db#password", "pw-2"},
		{"azure/db@" + v1 + "#password", "pw-1"},
		{"azure/db@latest#user", "app"},
		{"azure/Mixed-Case", "mc"},
		{"azure/staged@" + good, "good"},
	} {
		if got, err := os.ReadFile(d.Path(tc.path)); err != nil || string(got) != tc.want {
			t.Errorf("cat %s = %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
	for _, p := range []string{"azure/staged", "azure/mixed-case", "azure/MIXED-CASE", "azure/off", "azure/expired", "azure/early", "azure/gone",
		"azure/db@" + strings.Repeat("0", 32), "azure/db@3", "azure/missing", "azure/a/b", "azure/under_score"} {
		_, err := os.ReadFile(d.Path(p))
		wantErrno(t, "cat "+p, err, syscall.ENOENT)
	}
	names := readDir(t, d.Path("azure"))
	if len(names) != 22 || !slices.Contains(names, "bulk-19") || !slices.Contains(names, "Mixed-Case") || slices.Contains(names, "off") {
		t.Errorf("ls azure = %d names %q; want the 22 served (not staged, off, expired, early or gone), across pages of 7", len(names), names)
	}

	for _, tc := range []struct {
		ref  string
		code int
	}{{"azure:db#password", 0}, {"azure:Mixed-Case", 0}, {"azure:mixed-case", 3}, {"azure:missing", 3}, {"azure:off", 3}, {"azure:expired", 3}, {"azure:early", 3}} {
		out, stderr, code := secretfs(t, a.env, append([]string{"get"}, append(a.args(), tc.ref)...)...)
		if code != tc.code {
			t.Errorf("get %s: exit %d, want %d (%s)", tc.ref, code, tc.code, stderr)
		}
		if code == 0 && out == "" {
			t.Errorf("get %s printed nothing", tc.ref)
		}
	}
	// Were the service to answer in the request's spelling, the listing
	// still decides.
	a.EchoSpelling(true)
	if _, stderr, code := secretfs(t, a.env, append([]string{"get"}, append(a.args(), "azure:MIXED-case")...)...); code != 3 {
		t.Errorf("get azure:MIXED-case from a vault that echoes the spelling: exit %d, want 3 (%s)", code, stderr)
	}
	a.EchoSpelling(false)
	// A private cloud: the vault's URL, the authority from the environment.
	env := append(slices.Clone(a.env), "AZURE_AUTHORITY_HOST=https://login.fake-cloud.test/")
	out, stderr, code := secretfs(t, env, "get", "--providers", "azure", "--azure-vault", "https://"+a.Vault+".vault.fake-cloud.test", "azure:db#password")
	if code != 0 || out != "pw-2" {
		t.Errorf("get from a private cloud: exit %d, %q (%s); want pw-2", code, out, stderr)
	}
	if strings.Contains(d.Stderr(), "pw-2") || strings.Contains(d.Stderr(), "node-secret") {
		t.Error("the log holds a secret value or the client secret")
	}
}

// Errors: denied is EACCES (exit 5); throttled (429 with Retry-After) and
// an outage serve the last good value; a refused endpoint and missing or
// rejected credentials are unavailable (exit 6) within --timeout; a bad
// vault is a usage error.
func TestAzureFailures(t *testing.T) {
	t.Parallel()
	a := startAzure(t)
	a.Put("svc-key", "cached")
	d := azureMount(t, a, "--ttl", "300ms")
	p := d.Path("azure", "svc-key")
	if got, err := os.ReadFile(p); err != nil || string(got) != "cached" {
		t.Fatalf("first read %q, %v", got, err)
	}
	for _, tc := range []struct {
		name string
		fail func()
	}{
		{"throttled", func() { a.Throttle(5) }},
		{"503", func() { a.Fail(503) }},
		{"500", func() { a.Fail(500) }},
		{"stopped", a.Stop},
	} {
		tc.fail()
		time.Sleep(400 * time.Millisecond) // past the TTL
		start := time.Now()
		got, err := os.ReadFile(p)
		if err != nil || string(got) != "cached" || time.Since(start) > 3*time.Second {
			t.Errorf("%s: read %q, %v after %v; want the last good value", tc.name, got, err, time.Since(start))
		}
		a.Fail(0)
		a.Start()
	}
	a.Put("svc-key", "after")
	eventually(t, 15*time.Second, "the new value once the vault is back", func() bool {
		got, err := os.ReadFile(p)
		return err == nil && string(got) == "after"
	})

	denied := startAzure(t)
	denied.Put("svc-key", "x")
	other := "00000000-0000-0000-0000-0000000000b2"
	denied.App(other, "other-secret")
	denyEnv, err := denied.Env(t.TempDir(), other) // an application not granted the vault
	if err != nil {
		t.Fatal(err)
	}
	noCreds := slices.DeleteFunc(slices.Clone(a.env), func(e string) bool { return strings.HasPrefix(e, "AZURE_CLIENT_") })
	badSecret := append(slices.Clone(a.env), "AZURE_CLIENT_SECRET=wrong")
	for _, tc := range []struct {
		name  string
		env   []string
		vault string
		code  int
	}{
		{"not granted", denyEnv, denied.Vault, 5},
		{"a vault nobody answers", a.env, "no-such-vault", 6},
		{"no credentials", append(noCreds, "AZURE_TOKEN_CREDENTIALS=EnvironmentCredential"), a.Vault, 6},
		{"a rejected client secret", badSecret, a.Vault, 6},
		{"a vault URL in plaintext", a.env, "http://" + a.Vault + ".vault.azure.net", 2},
		{"no vault", a.env, "", 2},
	} {
		start := time.Now()
		_, stderr, code := secretfs(t, tc.env, "get", "--providers", "azure", "--azure-vault", tc.vault, "--timeout", "2s", "azure:svc-key")
		if took := time.Since(start); code != tc.code || took > 8*time.Second {
			t.Errorf("%s: exit %d after %v, %q; want %d within the timeout", tc.name, code, took.Round(time.Millisecond), stderr, tc.code)
		}
		if strings.Contains(stderr, "wrong") || strings.Contains(stderr, "node-secret") {
			t.Errorf("%s: the error holds the client secret: %q", tc.name, stderr)
		}
	}
}

// What a first read costs at 1,000 secrets: a lookup lists the vault
// (40 pages of 25, the service's most) and reads the one secret; the
// listing serves the spelling check too.
func TestAzureCallsAtScale(t *testing.T) {
	t.Parallel()
	a := startAzure(t)
	const n = 1000
	for i := range n {
		a.Put(fmt.Sprintf("s%04d", i), fmt.Sprint(i))
	}
	d := azureMount(t, a)
	if got, err := os.ReadFile(d.Path("azure", "s0500")); err != nil || string(got) != "500" {
		t.Fatalf("first read %q, %v", got, err)
	}
	list, get := a.Calls("ListSecrets"), a.Calls("GetSecret")
	t.Logf("first read at %d secrets: %d list pages, %d GetSecret, %d tokens", n, list, get, a.Calls("Token"))
	if list != n/25 || get != 1 {
		t.Errorf("first read at %d secrets: %d list pages, %d GetSecret; want %d (one walk) and 1", n, list, get, n/25)
	}
	if names := readDir(t, d.Path("azure")); len(names) != n {
		t.Errorf("ls azure: %d names, want %d", len(names), n)
	}
	if got := a.Calls("ListSecrets"); got != n/25 {
		t.Errorf("ls after the lookup: %d list pages in all, want the one walk's %d (cached)", got, n/25)
	}
}

func TestAzureOutageServesPathsAtOnce(t *testing.T) {
	t.Parallel()
	a := startAzure(t)
	a.Put("svc-key", "cached svc-key")
	a.Put("svc-other", "cached svc-other")
	d := azureMount(t, a, "--ttl", "300ms", "--max-stale", "1h", "--timeout", "3s")
	deepOutage(t, d, a.Stop, "azure/svc-key", "azure/svc-other", "cached svc-key", "cached svc-other")
}

// csi-provider gives a pod its own Azure identity (workload identity
// federation: the pod's token is the client assertion of its class's
// application), reads only vaults the node allows, and offers the node's
// own application only with --allow-node-credentials.
func TestCSIAzure(t *testing.T) {
	t.Parallel()
	a := startAzure(t)
	a.Put("db", `{"password":"pw-a"}`)
	const (
		issuer = "https://oidc.cluster.test"
		appA   = "00000000-0000-0000-0000-0000000000c1"
		appB   = "00000000-0000-0000-0000-0000000000c2"
		aud    = "api://AzureADTokenExchange"
	)
	subA, subB := "system:serviceaccount:team-a:app-a", "system:serviceaccount:team-b:app-b"
	a.Federate(appA, issuer, subA, aud)
	a.Grant(appA)
	a.Federate(appB, issuer, subB, aud) // not granted the vault
	podA := pod{Namespace: "team-a", Name: "a-1", ServiceAccount: "app-a", Tokens: map[string]string{aud: fakecloud.MakeJWT(issuer, subA, aud)}}
	podB := pod{Namespace: "team-b", Name: "b-1", ServiceAccount: "app-b", Tokens: map[string]string{aud: fakecloud.MakeJWT(issuer, subB, aud)}}
	class := func(more ...string) map[string]string {
		m := map[string]string{"objects": "- ref: azure:db#password\n  path: pw\n"}
		for i := 0; i+1 < len(more); i += 2 {
			m[more[i]] = more[i+1]
		}
		return m
	}

	// The SDK's own logging stays off whatever the environment says.
	p := startCSI(t, append(slices.Clone(a.env), "AZURE_SDK_GO_LOGGING=all"), append(a.args(), "--ttl", "1s", "--negative-ttl", "1s")...)
	t.Run("the pod's own identity", func(t *testing.T) {
		target := t.TempDir()
		if _, err := p.mount(t, podA, class("clientID", appA), target); err != nil {
			t.Fatalf("pod a as its application: %v", err)
		}
		if got, _ := readTarget(t, target, "pw"); got != "pw-a" {
			t.Errorf("pw = %q, want pw-a", got)
		}
		if _, err := p.mount(t, podA, class("clientID", appA, "keyvaultName", a.Vault), t.TempDir()); err != nil {
			t.Errorf("naming the node's vault: %v", err)
		}
	})
	for _, tc := range []struct {
		name   string
		pd     pod
		params map[string]string
		want   codes.Code
	}{
		{"an application not granted the vault", podB, class("clientID", appB), codes.PermissionDenied},
		{"another pod's application", podA, class("clientID", appB), codes.PermissionDenied},
		{"a vault the node does not allow", podA, class("clientID", appA, "keyvaultName", "attacker-vault"), codes.InvalidArgument},
		{"another backend's audience", podA, class("clientID", appA, "azureAudience", "sts.amazonaws.com"), codes.InvalidArgument},
		{"not a client id", podA, class("clientID", "app-a"), codes.InvalidArgument},
		{"no identity, no node credentials", podA, class(), codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.mount(t, tc.pd, tc.params, t.TempDir())
			if status.Code(err) != tc.want {
				t.Errorf("mount: %v, want %v", err, tc.want)
			}
			if tc.name == "another pod's application" && !strings.Contains(fmt.Sprint(err), "Entra ID refused") {
				t.Errorf("mount: %v; want the error to say Entra ID refused the identity", err)
			}
		})
	}

	t.Run("a rename that changes only the case", func(t *testing.T) {
		a.Put("Renamed", "old-spelling")
		// A name the latest listing lacks is looked for again at most every
		// 5 s.
		eventually(t, 15*time.Second, "a new secret is served once the vault is listed again", func() bool {
			_, err := p.mount(t, podA, map[string]string{"objects": "- ref: azure:Renamed\n  path: r\n", "clientID": appA}, t.TempDir())
			return err == nil
		})
		a.Delete("Renamed")
		a.Put("renamed", "new-spelling")
		target := t.TempDir()
		eventually(t, 15*time.Second, "the new spelling is served once the vault is listed again", func() bool {
			_, err := p.mount(t, podA, map[string]string{"objects": "- ref: azure:renamed\n  path: r\n", "clientID": appA}, target)
			return err == nil
		})
		if got, _ := readTarget(t, target, "r"); got != "new-spelling" {
			t.Errorf("r = %q, want new-spelling", got)
		}
		eventually(t, 15*time.Second, "the old spelling is not found once its value's TTL ends", func() bool {
			_, err := p.mount(t, podA, map[string]string{"objects": "- ref: azure:Renamed\n  path: r\n", "clientID": appA}, t.TempDir())
			return status.Code(err) == codes.NotFound
		})
	})
	t.Run("node credentials", func(t *testing.T) {
		node := startCSI(t, a.env, append(a.args(), "--allow-node-credentials")...)
		target := t.TempDir()
		if _, err := node.mount(t, podA, class(), target); err != nil {
			t.Fatalf("with the node's application: %v", err)
		}
		if got, _ := readTarget(t, target, "pw"); got != "pw-a" {
			t.Errorf("pw = %q, want pw-a", got)
		}
	})
	if log := p.Stderr(); strings.Contains(log, podA.Tokens[aud]) || strings.Contains(log, "node-secret") || strings.Contains(log, ".fake-") {
		t.Error("a token or the client secret reached csi-provider's log")
	}
}

// An expiry is a bound: a value is not served past its exp, not from the
// cache and not stale in an outage, whatever the TTL and --max-stale.
func TestAzureExpiryBoundsTheCache(t *testing.T) {
	t.Parallel()
	a := startAzure(t)
	a.Put("soon", "short-lived")
	a.Put("other", "x")
	d := azureMount(t, a, "--ttl", "1h", "--max-stale", "1h")
	exp := time.Now().Add(3 * time.Second) // from the mount's readiness: a loaded machine's slow start takes none of it
	a.Set("soon", true, &exp, nil)
	p := d.Path("azure", "soon")
	if got, err := os.ReadFile(p); err != nil || string(got) != "short-lived" {
		t.Fatalf("before its expiry: %q, %v", got, err)
	}
	a.Stop()
	time.Sleep(time.Until(exp) + 300*time.Millisecond)
	if got, err := os.ReadFile(p); err == nil {
		t.Errorf("after its expiry, with the vault down: %q served; want an error", got)
	}
	a.Start()
	eventually(t, 15*time.Second, "ENOENT once the vault is back (the failure's back-off ends)", func() bool {
		_, err := os.ReadFile(p)
		return errors.Is(err, syscall.ENOENT)
	})
}
