package csi

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// store is a fake backend: values by key, each readable only by the
// service account named in its first path element ("a/x" by "a"), and a
// count of calls by identity.
type store struct {
	mu      sync.Mutex
	values  map[string]string                 // guarded by mu
	version map[string]string                 // guarded by mu; a backend version, where there is one
	calls   map[string]int                    // guarded by mu; by service account
	opened  map[string]int                    // guarded by mu; provider instances, by service account
	tokens  map[string][]string               // guarded by mu; tokens the instances logged in with
	tokenOf map[string]func() (string, error) // guarded by mu; the newest instance's token source, by service account
}

func newStore() *store {
	return &store{values: map[string]string{}, version: map[string]string{}, calls: map[string]int{}, opened: map[string]int{}, tokens: map[string][]string{}, tokenOf: map[string]func() (string, error){}}
}

func (s *store) set(key, value, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[key], s.version[key] = value, version
}

type fakeProvider struct {
	s  *store
	sa string
}

func (p *fakeProvider) Name() string { return "fake" }

func (p *fakeProvider) Get(_ context.Context, key, _ string) (resolver.Secret, error) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.s.calls[p.sa]++
	if !strings.HasPrefix(key, p.sa+"/") {
		return resolver.Secret{}, fmt.Errorf("fake %s: %w", key, resolver.ErrPermission)
	}
	v, ok := p.s.values[key]
	if !ok {
		return resolver.Secret{}, fmt.Errorf("fake %s: %w", key, resolver.ErrNotFound)
	}
	return resolver.Secret{Value: []byte(v), Version: p.s.version[key]}, nil
}

func newServer(t *testing.T, s *store, allowNode bool) *Server {
	t.Helper()
	b := Backend{Name: "fake", Role: ParamVaultRole, Audience: ParamVaultAudience, DefaultAudience: "vault",
		Params: []string{ParamVaultRole, ParamVaultAddress, ParamVaultAudience}, Endpoint: ParamVaultAddress,
		Allowed: func(addr string) bool { return addr == "https://vault.node:8200" },
		Open: func(_ context.Context, id Identity) (resolver.Provider, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.opened[id.ServiceAccount]++
			if id.Token != nil {
				tok, _ := id.Token()
				s.tokens[id.ServiceAccount] = append(s.tokens[id.ServiceAccount], tok)
				s.tokenOf[id.ServiceAccount] = id.Token
			}
			return &fakeProvider{s: s, sa: id.ServiceAccount}, nil
		}}
	// Another backend, whose audience a fake login must never use.
	other := Backend{Name: "other", Role: ParamAWSRoleARN, Audience: ParamAWSAudience, DefaultAudience: DefaultAWSAudience,
		Params: []string{ParamAWSRoleARN, ParamAWSAudience},
		Open:   func(context.Context, Identity) (resolver.Provider, error) { return nil, errors.New("not used") }}
	srv, err := New(Options{Backends: []Backend{b, other}, AllowNodeCredentials: allowNode, MaxIdentities: 3, MaxPerNamespace: 2,
		Cache: cache.Options{TTL: 1 << 40}})
	if err != nil {
		t.Fatal(err)
	}
	srv.young = 0
	t.Cleanup(srv.Close)
	return srv
}

// jwtOf is an unsigned JWT with subject sub.
func jwtOf(sub string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(`{"sub":"`+sub+`"}`)) + ".sig"
}

// mountAs mounts objects for a pod of service account sa.
func mountAs(srv *Server, sa, objects string, extra map[string]string) (*v1alpha1.MountResponse, error) {
	m := map[string]string{AttrServiceAccount: sa, AttrPodNamespace: "ns-" + sa, ParamObjects: objects, ParamVaultRole: "r",
		AttrTokens: `{"vault":{"token":"token-of-` + sa + `"}}`}
	for k, v := range extra {
		m[k] = v
	}
	return srv.Mount(context.Background(), &v1alpha1.MountRequest{Attributes: attrs(m), Permission: "420"})
}

func TestMountFilesModesAndVersions(t *testing.T) {
	s := newStore()
	s.set("a/json", `{"user":"u","pw":"p"}`, "7")
	s.set("a/plain", "hello", "")
	srv := newServer(t, s, false)
	objects := "- ref: fake:a/json#pw\n  path: db/pw\n  mode: '0400'\n- ref: fake:a/plain\n  path: plain\n- template: 'U={{ secret \"fake:a/json#user\" }}'\n  path: t.env\n- ref: fake:a/json\n  path: whole.json\n"
	resp, err := mountAs(srv, "a", objects, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		path, content string
		mode          int32
	}{{"db/pw", "p", 0o400}, {"plain", "hello", 0o644}, {"t.env", "U=u", 0o644}, {"whole.json", `{"user":"u","pw":"p"}`, 0o644}}
	for i, w := range want {
		f := resp.Files[i]
		if f.Path != w.path || string(f.Contents) != w.content || f.Mode != w.mode {
			t.Errorf("file %d = %s %q %o, want %s %q %o", i, f.Path, f.Contents, f.Mode, w.path, w.content, w.mode)
		}
	}
	versions := func(r *v1alpha1.MountResponse) map[string]string {
		v := map[string]string{}
		for _, ov := range r.ObjectVersion {
			v[ov.Id] = ov.Version
		}
		return v
	}
	v1 := versions(resp)
	if got, want := v1["whole.json"], "7"; got != want {
		t.Errorf("version of a whole secret = %q, want the backend's %q", got, want)
	}
	for _, id := range []string{"db/pw", "plain", "t.env"} {
		if !strings.HasPrefix(v1[id], "hmac-sha256:") {
			t.Errorf("version of %s = %q, want an HMAC (a field, no backend version, a template)", id, v1[id])
		}
	}
	// A new version of the secret whose pw did not change, and a new plain
	// value: exactly the files whose content changed get a new version.
	s.set("a/json", `{"user":"u2","pw":"p"}`, "8")
	s.set("a/plain", "hello again", "")
	srv2 := newServer(t, s, false)
	srv2.macKey = srv.macKey
	again, err := mountAs(srv2, "a", objects, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2 := versions(again)
	for id, wantChanged := range map[string]bool{"db/pw": false, "plain": true, "t.env": true, "whole.json": true} {
		if changed := v1[id] != v2[id]; changed != wantChanged {
			t.Errorf("version of %s changed: %v, want %v", id, changed, wantChanged)
		}
	}
	// The MAC is the identity's: the same content in another namespace, or
	// under another process's key, has another version.
	r1, r2 := &Request{Pod: Pod{Namespace: "x", ServiceAccount: "s"}}, &Request{Pod: Pod{Namespace: "y", ServiceAccount: "s"}}
	if srv.mac(r1, "p", []byte("x")) == srv.mac(r2, "p", []byte("x")) {
		t.Error("two namespaces get the same MAC of one content")
	}
	if srv.mac(r1, "p", []byte("x")) == newServer(t, s, false).mac(r1, "p", []byte("x")) {
		t.Error("two processes share an HMAC key")
	}
}

func TestTemplateErrorsNameTheObjectNotTheValue(t *testing.T) {
	s := newStore()
	s.set("a/x", "TOPSECRET", "")
	srv := newServer(t, s, false)
	for _, tmpl := range []string{`{{ fail (secret \"fake:a/x\") }}`, `{{ repeat 100000000 \"x\" }}`} {
		_, err := mountAs(srv, "a", "- template: \""+tmpl+"\"\n  path: t\n", nil)
		if got := status.Code(err); got != codes.InvalidArgument || !strings.Contains(err.Error(), "objects[0].template") || strings.Contains(err.Error(), "TOPSECRET") {
			t.Errorf("%s: %v, want InvalidArgument naming objects[0].template, without the value", tmpl, err)
		}
	}
}

func TestIdentitiesAreIsolatedAndShared(t *testing.T) {
	s := newStore()
	s.set("a/x", "for a", "")
	srv := newServer(t, s, false)
	for i := range 5 {
		if _, err := mountAs(srv, "a", "- ref: fake:a/x\n  path: x\n", nil); err != nil {
			t.Fatalf("mount %d: %v", i, err)
		}
	}
	s.mu.Lock()
	if got := s.calls["a"]; got != 1 {
		t.Errorf("5 mounts of one identity made %d backend calls, want 1", got)
	}
	if got := s.opened["a"]; got != 1 {
		t.Errorf("5 mounts of one identity opened %d providers (logins), want 1", got)
	}
	s.mu.Unlock()
	// B may not read a/x, and A's cached value is not served to B.
	_, err := mountAs(srv, "b", "- ref: fake:a/x\n  path: x\n", nil)
	if got, want := status.Code(err), codes.PermissionDenied; got != want {
		t.Errorf("B reading A's secret: %v, want %v", err, want)
	}
	// Another role is another identity, even for the same service account.
	if _, err := mountAs(srv, "a", "- ref: fake:a/x\n  path: x\n", map[string]string{ParamVaultRole: "other"}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	if got := s.opened["a"]; got != 2 {
		t.Errorf("a second role opened %d providers in all, want 2", got)
	}
	s.mu.Unlock()
	if got := srv.Identities(); got != 3 {
		t.Errorf("%d identities kept, want 3 (a, b, a with another role)", got)
	}
	// A fourth identity closes the least recently used idle one (b's).
	s.set("c/x", "for c", "")
	if _, err := mountAs(srv, "c", "- ref: fake:c/x\n  path: x\n", nil); err != nil {
		t.Fatal(err)
	}
	if got := srv.Identities(); got != 3 {
		t.Errorf("%d identities kept, want MaxIdentities (3)", got)
	}
}

func TestIdentityNeedsARoleAndAToken(t *testing.T) {
	s := newStore()
	s.set("a/x", "v", "")
	for _, tc := range []struct {
		name      string
		allowNode bool
		extra     map[string]string
		want      codes.Code
		wantIn    string
	}{
		{"no role, node credentials off", false, map[string]string{ParamVaultRole: ""}, codes.PermissionDenied, "--allow-node-credentials"},
		{"no role, node credentials on", true, map[string]string{ParamVaultRole: ""}, codes.OK, ""},
		{"no token for the audience", false, map[string]string{AttrTokens: `{"sts.amazonaws.com":{"token":"t"}}`}, codes.InvalidArgument, AttrTokens},
		{"no tokens at all", false, map[string]string{AttrTokens: ""}, codes.InvalidArgument, "tokenRequests"},
		{"another service account's token", false, map[string]string{AttrTokens: `{"vault":{"token":"` + jwtOf("system:serviceaccount:ns-b:b") + `"}}`}, codes.PermissionDenied, "not of the pod's service account"},
		{"the pod's own token", false, map[string]string{AttrTokens: `{"vault":{"token":"` + jwtOf("system:serviceaccount:ns-a:a") + `"}}`}, codes.OK, ""},
		{"provider not offered", false, map[string]string{ParamObjects: "- ref: env:HOME\n  path: x\n"}, codes.InvalidArgument, `"env" is not offered`},
		{"missing secret", false, map[string]string{ParamObjects: "- ref: fake:a/none\n  path: x\n"}, codes.NotFound, "fake:a/none"},
		// A class chose where a pod's token goes, and for which audience.
		{"an address the node does not list", false, map[string]string{ParamVaultAddress: "https://attacker.example:8200"}, codes.InvalidArgument, "parameter " + ParamVaultAddress},
		{"an address the node lists", false, map[string]string{ParamVaultAddress: "https://vault.node:8200"}, codes.OK, ""},
		{"another backend's audience", false, map[string]string{ParamVaultAudience: DefaultAWSAudience, AttrTokens: `{"sts.amazonaws.com":{"token":"t"}}`}, codes.InvalidArgument, "parameter " + ParamVaultAudience},
		{"another backend's audience, that one moved away", false, map[string]string{ParamVaultAudience: DefaultAWSAudience, ParamAWSAudience: "unused", AttrTokens: `{"sts.amazonaws.com":{"token":"t"}}`}, codes.InvalidArgument, "parameter " + ParamVaultAudience},
		{"a Google audience in capitals", false, map[string]string{ParamVaultAudience: "HTTPS://IAM.GOOGLEAPIS.COM/projects/1/locations/global/workloadIdentityPools/p/providers/k", AttrTokens: `{"HTTPS://IAM.GOOGLEAPIS.COM/projects/1/locations/global/workloadIdentityPools/p/providers/k":{"token":"t"}}`}, codes.InvalidArgument, "Google's STS"},
		{"GKE's pool audience", false, map[string]string{ParamVaultAudience: "my-project.svc.id.goog", AttrTokens: `{"my-project.svc.id.goog":{"token":"t"}}`}, codes.InvalidArgument, "Google's STS"},
		{"another backend's audience in capitals", false, map[string]string{ParamVaultAudience: "STS.AMAZONAWS.COM", AttrTokens: `{"STS.AMAZONAWS.COM":{"token":"t"}}`}, codes.InvalidArgument, "parameter " + ParamVaultAudience},
		{"a Google pool provider's audience", false, map[string]string{ParamVaultAudience: "https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k", AttrTokens: `{"https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k":{"token":"t"}}`}, codes.InvalidArgument, "Google's STS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, s, tc.allowNode)
			extra := map[string]string{ParamObjects: "- ref: fake:a/x\n  path: x\n"}
			for k, v := range tc.extra {
				extra[k] = v
			}
			_, err := mountAs(srv, "a", extra[ParamObjects], extra)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code = %v (%v), want %v", got, err, tc.want)
			}
			if err != nil && !strings.Contains(status.Convert(err).Message(), tc.wantIn) {
				t.Errorf("message %q does not say %q", status.Convert(err).Message(), tc.wantIn)
			}
		})
	}
}

func TestTokensAreRenewedNotMultiplied(t *testing.T) {
	s := newStore()
	s.set("a/x", "v", "")
	srv := newServer(t, s, false)
	if _, err := mountAs(srv, "a", "- ref: fake:a/x\n  path: x\n", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := mountAs(srv, "a", "- ref: fake:a/x\n  path: x\n", map[string]string{AttrTokens: `{"vault":{"token":"newer"}}`}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	opened, tokenOf := s.opened["a"], s.tokenOf["a"]
	s.mu.Unlock()
	if opened != 1 {
		t.Errorf("two mounts of one identity opened %d providers (logins), want 1", opened)
	}
	if tok, err := tokenOf(); err != nil || tok != "newer" {
		t.Errorf("the identity's token source gives %q, %v; want the newest a mount brought", tok, err)
	}
}

// One namespace cannot take every identity slot: past its share its own
// idle identities go, and others' stay; counters never go down.
func TestIdentitiesAreBoundedPerNamespace(t *testing.T) {
	s := newStore()
	srv := newServer(t, s, false) // MaxIdentities 3, MaxPerNamespace 2
	for _, sa := range []string{"a", "b"} {
		s.set(sa+"/x", "v", "")
	}
	if _, err := mountAs(srv, "a", "- ref: fake:a/x\n  path: x\n", map[string]string{AttrPodNamespace: "quiet"}); err != nil {
		t.Fatal(err)
	}
	before := srv.Stats().Calls
	for i := range 5 {
		sa := fmt.Sprintf("b%d", i)
		s.set(sa+"/x", "v", "")
		if _, err := mountAs(srv, sa, "- ref: fake:"+sa+"/x\n  path: x\n", map[string]string{AttrPodNamespace: "noisy"}); err != nil {
			t.Fatal(err)
		}
	}
	srv.mu.Lock()
	byNS := map[string]int{}
	for _, e := range srv.engines {
		byNS[e.namespace]++
	}
	srv.mu.Unlock()
	if byNS["quiet"] != 1 || byNS["noisy"] > 2 {
		t.Errorf("identities by namespace = %v, want quiet's kept and noisy's at most 2", byNS)
	}
	if after := srv.Stats().Calls; after < before+5 {
		t.Errorf("backend calls went from %d to %d after evictions, want a counter that never goes down", before, after)
	}
}

func TestMountAboveTheDriversLimit(t *testing.T) {
	s := newStore()
	s.set("a/big", strings.Repeat("x", 3<<20), "")
	srv := newServer(t, s, false)
	_, err := mountAs(srv, "a", "- ref: fake:a/big\n  path: one\n- ref: fake:a/big\n  path: two\n", nil)
	if got, want := status.Code(err), codes.ResourceExhausted; got != want {
		t.Fatalf("6 MiB of files: %v, want %v", err, want)
	}
	if !strings.Contains(err.Error(), "--max-call-recv-msg-size") {
		t.Errorf("the message does not name the driver's flag: %v", err)
	}
	if _, err := mountAs(srv, "a", "- ref: fake:a/big\n  path: one\n", nil); err != nil {
		t.Errorf("3 MiB (above the 1 MiB sync limit, below the driver's): %v, want served", err)
	}
}
