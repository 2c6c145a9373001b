package env

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/secretfs/secretfs/resolver"
)

func TestAllowDeny(t *testing.T) {
	vars := map[string]string{
		"API_KEY": "k", "DB_PASS": "p", "HOME": "/root",
		"VAULT_TOKEN": "s.tok", "AWS_SECRET_ACCESS_KEY": "aws", "AWS_SESSION_TOKEN": "sess",
		"SECRETFS_TTL": "1m", "VAULT_ADDR": "http://x",
		"AWS_SECRET_KEY": "alias", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "bearer",
	}
	tests := []struct {
		name    string
		allow   []string
		visible []string // sorted
	}{
		{"default shows all but credentials", nil, []string{"API_KEY", "DB_PASS", "HOME", "VAULT_ADDR"}},
		{"star is the default", []string{"*"}, []string{"API_KEY", "DB_PASS", "HOME", "VAULT_ADDR"}},
		{"glob", []string{"*_KEY", "DB_*"}, []string{"API_KEY", "DB_PASS"}},
		{"globs never match credentials", []string{"VAULT_*", "AWS_*", "SECRETFS_*"}, []string{"VAULT_ADDR"}},
		{"exact names expose credentials", []string{"VAULT_TOKEN", "SECRETFS_TTL"}, []string{"SECRETFS_TTL", "VAULT_TOKEN"}},
		{"nothing", []string{"NOPE"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newWith(tt.allow, vars)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.List(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.visible) {
				t.Errorf("List = %q, want %q", got, tt.visible)
			}
			for k, v := range vars {
				s, err := p.Get(context.Background(), k, "")
				if slices.Contains(tt.visible, k) {
					if err != nil || string(s.Value) != v {
						t.Errorf("Get(%s) = %q, %v; want its value", k, s.Value, err)
					}
				} else if !errors.Is(err, resolver.ErrNotFound) {
					t.Errorf("Get(%s) error = %v, want ErrNotFound", k, err)
				}
			}
		})
	}
}

func TestGetErrors(t *testing.T) {
	p, _ := newWith(nil, map[string]string{"A": "1"})
	for _, tt := range []struct{ key, version string }{{"MISSING", ""}, {"A", "1"}, {"a/b", ""}} {
		if _, err := p.Get(context.Background(), tt.key, tt.version); !errors.Is(err, resolver.ErrNotFound) {
			t.Errorf("Get(%q, %q) error = %v, want ErrNotFound", tt.key, tt.version, err)
		}
	}
	if names, _ := p.List(context.Background(), "sub"); len(names) != 0 {
		t.Errorf("List(sub) = %q, want nothing (variables have no directories)", names)
	}
}

func TestBadPattern(t *testing.T) {
	if _, err := New([]string{"["}); err == nil {
		t.Error("New([) succeeded, want a pattern error")
	}
}

func TestRealEnvironment(t *testing.T) {
	t.Setenv("SECRETFS_ENV_TEST_VALUE", "x")
	t.Setenv("ENV_TEST_VALUE", "y\nz")
	p, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := p.Get(context.Background(), "ENV_TEST_VALUE", ""); err != nil || string(s.Value) != "y\nz" {
		t.Errorf("Get = %q, %v", s.Value, err)
	}
	if _, err := p.Get(context.Background(), "SECRETFS_ENV_TEST_VALUE", ""); !errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("SECRETFS_* visible: %v", err)
	}
}
