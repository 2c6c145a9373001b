package vault

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/secretfs/secretfs/resolver"
)

// IssuedName is the provider's name in references of issued secrets.
const IssuedName = "vault-issued"

// Issue is one issuing write declared in the config file (vault-issue:):
// a path that makes a secret when written to with Data (PKI's
// pki/issue/ROLE, ssh/sign, ...), shown as vault-issued/NAME.
type Issue struct {
	Name string         `yaml:"name"`
	Path string         `yaml:"path"`
	Data map[string]any `yaml:"data"`
	// RenewBefore is when a new one is issued: a duration left of its
	// validity ("8h") or a part of it ("33%"); default a third.
	RenewBefore string `yaml:"renew-before"`
}

// Check reports what is wrong with an entry.
func (is Issue) Check() error {
	if err := resolver.CheckKey(is.Name); err != nil || strings.ContainsAny(is.Name, "/@#") {
		return fmt.Errorf("vault-issue: name %q: want a name without /, @ or #", is.Name)
	}
	if err := resolver.CheckKey(strings.Trim(is.Path, "/")); err != nil {
		return fmt.Errorf("vault-issue %s: path %q: %v", is.Name, is.Path, err)
	}
	if _, _, err := is.renewBefore(); err != nil {
		return err
	}
	return nil
}

// renewBefore parses RenewBefore: a part of the validity, or a duration.
func (is Issue) renewBefore() (part float64, d time.Duration, err error) {
	s := strings.TrimSpace(is.RenewBefore)
	switch {
	case s == "":
		return 0, 0, nil
	case strings.HasSuffix(s, "%"):
		n, perr := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if perr != nil || n <= 0 || n >= 100 {
			return 0, 0, fmt.Errorf("vault-issue %s: renew-before %q: want a percentage between 0 and 100, or a duration", is.Name, s)
		}
		return n / 100, 0, nil
	}
	d, perr := time.ParseDuration(s)
	if perr != nil || d <= 0 {
		return 0, 0, fmt.Errorf("vault-issue %s: renew-before %q: want a duration or a percentage", is.Name, s)
	}
	return 0, d, nil
}

// issued is the provider of the issuing writes: vault-issued:NAME.
type issued struct{ p *Provider }

// Issued returns the provider of the configured issuing writes (nil when
// there are none). It shares p's client and login.
func (p *Provider) Issued() resolver.Provider {
	if len(p.cfg.Issue) == 0 {
		return nil
	}
	return issued{p}
}

// Companions implements the ability of a provider to bring others (the
// command line registers them beside it).
func (p *Provider) Companions() []resolver.Provider {
	if is := p.Issued(); is != nil {
		return []resolver.Provider{is}
	}
	return nil
}

func (issued) Name() string { return IssuedName }

// List lists the entries' names: listing never writes.
func (i issued) List(ctx context.Context, dir string) ([]string, error) {
	if dir != "" {
		return nil, nil
	}
	var out []string
	for _, is := range i.p.cfg.Issue {
		out = append(out, is.Name)
	}
	return out, nil
}

// Get writes the entry's path with its data: each read is an issuance,
// which the engine keeps and renews or replaces as a lease (its end is the
// certificate's NotAfter, or the response's lease).
func (i issued) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	k := slices.IndexFunc(i.p.cfg.Issue, func(is Issue) bool { return is.Name == key })
	if k < 0 || version != "" {
		return resolver.Secret{}, fmt.Errorf("vault-issued %s: %w (no such vault-issue entry)", key, resolver.ErrNotFound)
	}
	is := i.p.cfg.Issue[k]
	var s *api.Secret
	err := i.p.retryAfterRelogin(ctx, func() error {
		var err error
		s, err = i.p.client.Logical().WriteWithContext(ctx, strings.Trim(is.Path, "/"), is.Data)
		return i.p.mapError("issue "+key, err)
	})
	if err != nil {
		return resolver.Secret{}, err
	}
	if s == nil || s.Data == nil {
		return resolver.Secret{}, fmt.Errorf("vault-issued %s: %w (the write returned no data)", key, resolver.ErrNotFound)
	}
	data := make(map[string]any, len(s.Data))
	for f, v := range s.Data {
		if list, ok := v.([]any); ok && allStrings(list) {
			// A chain: PEM blocks joined by newlines.
			parts := make([]string, len(list))
			for j, e := range list {
				parts[j] = strings.TrimSpace(e.(string))
			}
			v = strings.Join(parts, "\n")
		}
		data[f] = v
	}
	value, err := marshalSorted(data)
	if err != nil {
		return resolver.Secret{}, fmt.Errorf("vault-issued %s: %w", key, err)
	}
	out := resolver.Secret{Value: value}
	lease := i.p.leaseOf(s)
	if lease != nil {
		lease.Renewable = false // an issuance is replaced, not renewed
	}
	if pemText, ok := data["certificate"].(string); ok {
		if b, _ := pem.Decode([]byte(pemText)); b != nil {
			if cert, err := x509.ParseCertificate(b.Bytes); err == nil {
				if lease == nil || cert.NotAfter.Before(lease.Expires) {
					lease = &resolver.Lease{Start: cert.NotBefore, Expires: cert.NotAfter}
				}
				out.Version = cert.SerialNumber.Text(16)
				out.Created = cert.NotBefore
			}
		}
	}
	if lease != nil {
		part, d, _ := is.renewBefore()
		if d > 0 && lease.Term() > 0 {
			part = min(float64(d)/float64(lease.Term()), 0.99)
		}
		lease.RenewBefore = part
		out.Lease = lease
	}
	return out, nil
}

func allStrings(list []any) bool {
	for _, e := range list {
		if _, ok := e.(string); !ok {
			return false
		}
	}
	return len(list) > 0
}
