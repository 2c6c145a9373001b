package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
