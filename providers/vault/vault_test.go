package vault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/secretfs/secretfs/resolver"
)

// The end-to-end tests run against a real Vault dev server (integration/);
// these cover decisions a dev server does not show.

func TestMapError(t *testing.T) {
	p := &Provider{log: slog.New(slog.DiscardHandler)}
	tests := []struct {
		err  error
		want error // nil: none of the sentinels
	}{
		{&api.ResponseError{StatusCode: 404}, resolver.ErrNotFound},
		{&api.ResponseError{StatusCode: 403, Errors: []string{"permission denied"}}, resolver.ErrPermission},
		{&api.ResponseError{StatusCode: 503, Errors: []string{"Vault is sealed"}}, resolver.ErrUnavailable},
		{&api.ResponseError{StatusCode: 500}, resolver.ErrUnavailable},
		{&api.ResponseError{StatusCode: 429}, resolver.ErrUnavailable},
		{&api.ResponseError{StatusCode: 412}, resolver.ErrUnavailable},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, resolver.ErrUnavailable},
		{fmt.Errorf("Get: %w", context.DeadlineExceeded), resolver.ErrUnavailable},
		{&api.ResponseError{StatusCode: 400, Errors: []string{"bad"}}, nil},
		{&api.ResponseError{StatusCode: 405}, nil}, // errors.ErrUnsupported
	}
	sentinels := []error{resolver.ErrNotFound, resolver.ErrPermission, resolver.ErrUnavailable}
	for _, tt := range tests {
		got := p.mapError("read x", tt.err)
		for _, s := range sentinels {
			if errors.Is(got, s) != (s == tt.want) {
				t.Errorf("mapError(%v) = %v; errors.Is(%v) = %v", tt.err, got, s, errors.Is(got, s))
			}
		}
	}
	if got := p.mapError("x", context.Canceled); !errors.Is(got, context.Canceled) || errors.Is(got, resolver.ErrUnavailable) {
		t.Errorf("canceled = %v, want context.Canceled only", got)
	}
}

func TestNextSegments(t *testing.T) {
	mounts := []string{"secret/", "kv1/", "team/kv/", "team/other/", "teamwork/"}
	tests := []struct {
		under string
		want  []string
	}{
		{"", []string{"secret/", "kv1/", "team/", "teamwork/"}},
		{"team/", []string{"kv/", "other/"}},
		{"secret/", nil},
		{"nothing/", nil},
	}
	for _, tt := range tests {
		if got := nextSegments(mounts, tt.under); !slices.Equal(got, tt.want) {
			t.Errorf("nextSegments(%q) = %q, want %q", tt.under, got, tt.want)
		}
	}
}

func TestInfoOf(t *testing.T) {
	tests := []struct {
		data map[string]any
		want mountInfo
	}{
		{map[string]any{"path": "secret/", "type": "kv", "options": map[string]any{"version": "2"}}, mountInfo{path: "secret/", isKV: true, kvV2: true}},
		{map[string]any{"path": "kv1/", "type": "kv", "options": map[string]any{"version": "1"}}, mountInfo{path: "kv1/", isKV: true}},
		{map[string]any{"path": "old/", "type": "generic"}, mountInfo{path: "old/", isKV: true}},
		{map[string]any{"path": "cubbyhole/", "type": "cubbyhole", "options": nil}, mountInfo{path: "cubbyhole/"}},
	}
	for _, tt := range tests {
		got := infoOf(tt.data)
		got.checked = time.Time{}
		if got != tt.want {
			t.Errorf("infoOf(%v) = %+v, want %+v", tt.data, got, tt.want)
		}
	}
}

func TestAuthConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Auth: "ldap"},
		{Auth: AuthAppRole, RoleIDFile: "x"},
		{Auth: AuthJWT, JWTFile: "x"},
		{Auth: AuthJWT, Role: "r"},
	} {
		p := &Provider{cfg: cfg}
		if err := p.checkAuthConfig(); err == nil {
			t.Errorf("checkAuthConfig(%+v) = nil, want an error", cfg)
		}
	}
}

func TestCredentialErrorsNeverShowContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret-id")
	os.WriteFile(p, []byte("   \n"), 0o600)
	if _, err := readCredential("secret id", p); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
	os.WriteFile(p, []byte("s.topsecret\n"), 0o600)
	if got, err := readCredential("secret id", p); err != nil || got != "s.topsecret" {
		t.Errorf("readCredential = %q, %v", got, err)
	}
	if _, err := readCredential("secret id", filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
	// Surrounding white space is not part of a credential, and an error
	// about an unreadable one (here a directory) never shows file contents.
	os.WriteFile(p, []byte("  s.topsecret-but-padded  \n\n"), 0o600)
	got, err := readCredential("secret id", p)
	if err != nil || got != "s.topsecret-but-padded" {
		t.Errorf("readCredential = %q, %v", got, err)
	}
	if _, err := readCredential("secret id", dir); err == nil || strings.Contains(err.Error(), "topsecret") {
		t.Errorf("unreadable credential: %v", err)
	}
}

func TestDeadTokenErrors(t *testing.T) {
	tests := []struct {
		errs []string
		want bool
	}{
		{[]string{"permission denied"}, true},                             // 1.14, revoked or expired
		{[]string{"permission denied", "invalid token"}, true},            // newer releases
		{[]string{"1 error occurred:\n\t* permission denied\n\n"}, false}, // a policy: the token is alive
		{nil, false},
	}
	for _, tt := range tests {
		if got := deadTokenErrors(tt.errs); got != tt.want {
			t.Errorf("deadTokenErrors(%q) = %v, want %v", tt.errs, got, tt.want)
		}
	}
}

// A dynamic secret's read carries its lease; Renew asks for its term again
// and says when Vault granted less (the maximum TTL is near), and a 400 is
// a lease that is gone.
func TestLeases(t *testing.T) {
	var renewBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/auth/token/lookup-self":
			fmt.Fprint(w, `{"data":{"ttl":0,"renewable":false}}`)
		case "/v1/sys/internal/ui/mounts/database/creds/app":
			fmt.Fprint(w, `{"data":{"path":"database/","type":"database","options":null}}`)
		case "/v1/database/creds/app":
			fmt.Fprint(w, `{"lease_id":"database/creds/app/abc","renewable":true,"lease_duration":60,"data":{"username":"u","password":"p"}}`)
		case "/v1/sys/leases/renew":
			b, _ := io.ReadAll(r.Body)
			renewBody = string(b)
			switch {
			case strings.Contains(renewBody, "gone"):
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `{"errors":["lease not found"]}`)
			case strings.Contains(renewBody, "capped"):
				fmt.Fprint(w, `{"lease_id":"capped","renewable":true,"lease_duration":20}`)
			default:
				fmt.Fprint(w, `{"lease_id":"database/creds/app/abc","renewable":true,"lease_duration":60}`)
			}
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"errors":[]}`)
		}
	}))
	defer srv.Close()
	t.Setenv("VAULT_TOKEN", "")
	p, err := New(context.Background(), Config{Address: srv.URL, Auth: AuthToken, TokenFile: writeFile(t, "tok")})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, err := p.Get(context.Background(), "database/creds/app", "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Lease == nil || s.Lease.ID != "database/creds/app/abc" || !s.Lease.Renewable || s.Lease.Term() != time.Minute || s.MaxAge != 0 {
		t.Fatalf("lease: got %v (MaxAge %s), want a renewable 60s lease", s.Lease, s.MaxAge)
	}
	l, err := p.Renew(context.Background(), *s.Lease)
	if err != nil || !l.Renewable || l.Term() != time.Minute || !strings.Contains(renewBody, `"increment":60`) {
		t.Fatalf("renew: got %v, %v (asked %s), want 60s asked and granted, renewable", l, err, renewBody)
	}
	l, err = p.Renew(context.Background(), resolver.Lease{ID: "capped", Start: time.Now(), Expires: time.Now().Add(time.Minute), Renewable: true})
	if err != nil || l.Renewable || l.Term() != 20*time.Second {
		t.Fatalf("capped renew: got %v, %v, want 20s and no longer renewable", l, err)
	}
	if _, err := p.Renew(context.Background(), resolver.Lease{ID: "gone", Start: time.Now(), Expires: time.Now().Add(time.Minute)}); !errors.Is(err, resolver.ErrNotFound) {
		t.Fatalf("renew of a lease Vault does not know: got %v, want not found", err)
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
