// Package env is the provider of the daemon's own environment variables.
//
// Which variables are visible is decided by glob patterns (path.Match
// syntax, "*" by default). Variables that hold secretfs's own credentials
// (VAULT_TOKEN, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_SECRET_KEY,
// AWS_CONTAINER_AUTHORIZATION_TOKEN and every SECRETFS_*)
// stay hidden unless a pattern names one exactly: a broad "*" never exposes
// the keys to the other backends.
package env

import (
	"context"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/secretfs/secretfs/resolver"
)

// Name is the provider's name in references.
const Name = "env"

// Provider serves environment variables. It is safe for concurrent use.
type Provider struct {
	mu      sync.RWMutex
	allow   []string // guarded by mu
	lookup  func(string) (string, bool)
	environ func() []string
}

// New returns a Provider exposing the variables that match any of the allow
// patterns (all when allow is empty).
func New(allow []string) (*Provider, error) {
	p := &Provider{lookup: os.LookupEnv, environ: os.Environ}
	if err := p.SetAllow(allow); err != nil {
		return nil, err
	}
	return p, nil
}

// SetAllow replaces the allow patterns (a configuration reload).
func (p *Provider) SetAllow(allow []string) error {
	if len(allow) == 0 {
		allow = []string{"*"}
	}
	for _, pat := range allow {
		if _, err := path.Match(pat, ""); err != nil {
			return fmt.Errorf("env: bad --env-allow pattern %q: %w", pat, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.allow = slices.Clone(allow)
	return nil
}

// newWith is New with an environment of the test's choosing.
func newWith(allow []string, env map[string]string) (*Provider, error) {
	p, err := New(allow)
	if err != nil {
		return nil, err
	}
	p.lookup = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	p.environ = func() []string {
		var out []string
		for k, v := range env {
			out = append(out, k+"="+v)
		}
		return out
	}
	return p, nil
}

// Name implements resolver.Provider.
func (p *Provider) Name() string { return Name }

// Get implements resolver.Provider. Variables have no versions.
func (p *Provider) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	if version != "" {
		return resolver.Secret{}, fmt.Errorf("%w: environment variables have no versions", resolver.ErrNotFound)
	}
	if !p.visible(key) {
		return resolver.Secret{}, resolver.ErrNotFound
	}
	v, ok := p.lookup(key)
	if !ok {
		return resolver.Secret{}, resolver.ErrNotFound
	}
	return resolver.Secret{Value: []byte(v)}, nil
}

// List implements resolver.Lister: the visible variables, all at the top.
func (p *Provider) List(ctx context.Context, dir string) ([]string, error) {
	if dir != "" {
		return nil, nil
	}
	var names []string
	for _, kv := range p.environ() {
		k, _, _ := strings.Cut(kv, "=")
		if p.visible(k) {
			names = append(names, k)
		}
	}
	return names, nil
}

// reserved reports whether k holds secretfs's own credentials.
func reserved(k string) bool {
	switch k {
	case "VAULT_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_SECRET_KEY", "AWS_CONTAINER_AUTHORIZATION_TOKEN": // aliases the AWS SDK reads too
		return true
	}
	return strings.HasPrefix(k, "SECRETFS_")
}

func (p *Provider) visible(k string) bool {
	if k == "" || strings.ContainsAny(k, "/=\x00") {
		return false
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if reserved(k) {
		for _, pat := range p.allow {
			if pat == k {
				return true
			}
		}
		return false
	}
	for _, pat := range p.allow {
		if ok, _ := path.Match(pat, k); ok {
			return true
		}
	}
	return false
}
