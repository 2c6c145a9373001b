package exec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// script writes a shell provider and returns its provider.
func script(t *testing.T, body string, cfg Config) *Provider {
	t.Helper()
	p := filepath.Join(t.TempDir(), "provider.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Name, cfg.Command = "x", []string{p}
	prov, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return prov
}

const contract = `case "$1 $2" in
"get plain") printf 'value with\nnewline' ;;
"get gone") exit 3 ;;
"get denied") exit 5 ;;
"get env") printf '%s|%s' "$PASSED" "$HIDDEN" ;;
"get big") head -c 2000000 /dev/zero ;;
"get weird") exit 42 ;;
"get versioned") [ -n "$3" ] && exit 2; printf current ;;
"list ") printf 'a\nb/\n' ;;
"list nolist") exit 2 ;;
*) exit 3 ;;
esac
`

func TestContract(t *testing.T) {
	t.Setenv("PASSED", "yes")
	t.Setenv("HIDDEN", "no")
	p := script(t, contract, Config{Env: []string{"PASSED"}, Timeout: 5 * time.Second})
	ctx := context.Background()
	tests := []struct {
		key, version string
		want         string
		wantErr      error
	}{
		{"plain", "", "value with\nnewline", nil},
		{"gone", "", "", resolver.ErrNotFound},
		{"denied", "", "", resolver.ErrPermission},
		{"env", "", "yes|", nil}, // only the names passed through
		{"big", "", "", resolver.ErrUnavailable},
		{"weird", "", "", resolver.ErrUnavailable},
		{"versioned", "", "current", nil},
		{"versioned", "v1", "", resolver.ErrNotFound},
	}
	for _, tt := range tests {
		s, err := p.Get(ctx, tt.key, tt.version)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("get %s %s: %v, want %v", tt.key, tt.version, err, tt.wantErr)
			}
			continue
		}
		if err != nil || string(s.Value) != tt.want {
			t.Errorf("get %s %s = %q, %v; want %q", tt.key, tt.version, s.Value, err, tt.want)
		}
	}
	if names, err := p.List(ctx, ""); err != nil || strings.Join(names, ",") != "a,b/" {
		t.Errorf("list = %q, %v", names, err)
	}
	if _, err := p.List(ctx, "nolist"); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("list that cannot: %v, want ErrUnsupported", err)
	}
}

func TestHangKillsTheGroup(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "grandchild-alive")
	p := script(t, `(sleep 3; touch `+marker+`) & sleep 30`, Config{Timeout: 300 * time.Millisecond})
	start := time.Now()
	_, err := p.Get(context.Background(), "k", "")
	if !errors.Is(err, resolver.ErrUnavailable) || time.Since(start) > 3*time.Second {
		t.Fatalf("a hanging program: %v after %v, want unavailable within the timeout", err, time.Since(start))
	}
	time.Sleep(3500*time.Millisecond - time.Since(start))
	if _, err := os.Stat(marker); err == nil {
		t.Error("a grandchild outlived the call")
	}
}

func TestTrust(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the trust checks apply to a daemon that runs as root")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "p.sh")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	os.Chmod(p, 0o777)
	if _, err := New(Config{Name: "x", Command: []string{p}}); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Errorf("a world-writable program: %v, want refused", err)
	}
	os.Chmod(p, 0o755)
	os.Chown(p, 1234, 0)
	if _, err := New(Config{Name: "x", Command: []string{p}}); err == nil || !strings.Contains(err.Error(), "owned by uid 1234") {
		t.Errorf("a program of another user: %v, want refused", err)
	}
}

// A key was passed to the program as an argument as it was: `cat
// MNT/p/--help` ran `PROGRAM get --help`. Keys, versions and directories
// that start with '-' are not found, and the program is not run.
func TestKeysAreNeverOptions(t *testing.T) {
	ran := filepath.Join(t.TempDir(), "ran")
	p := script(t, `echo "$@" >> `+ran+`; printf value`, Config{Timeout: 5 * time.Second})
	ctx := context.Background()
	for _, tt := range []struct{ key, version string }{{"--help", ""}, {"-x", ""}, {"k", "--version"}, {"k", "-1"}} {
		if _, err := p.Get(ctx, tt.key, tt.version); !errors.Is(err, resolver.ErrNotFound) {
			t.Errorf("Get(%q, %q) = %v, want ErrNotFound", tt.key, tt.version, err)
		}
	}
	if _, err := p.List(ctx, "-r"); !errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("List(-r) = %v, want ErrNotFound", err)
	}
	if data, err := os.ReadFile(ran); err == nil {
		t.Errorf("the program ran with %q", data)
	}
	if v, err := p.Get(ctx, "a/-b", ""); err != nil || string(v.Value) != "value" {
		t.Errorf("a key with '-' inside: %q, %v", v.Value, err)
	}
}
