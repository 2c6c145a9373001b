package resolver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// DefaultTimeout bounds a backend call when the caller's context has no
// earlier deadline.
const DefaultTimeout = 10 * time.Second

// Resolver dispatches references to registered providers and applies #FIELD.
// It is safe for concurrent use.
type Resolver struct {
	// Deadlines bound every provider call, each with its own budget (see
	// Deadlines.CallFor). Set them before the first call.
	Deadlines Deadlines

	mu        sync.RWMutex
	providers map[string]Provider // guarded by mu
}

// New returns a Resolver with the given providers registered.
func New(providers ...Provider) (*Resolver, error) {
	r := &Resolver{}
	for _, p := range providers {
		if err := r.Register(p); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds a provider under its Name. A duplicate name is an error.
func (r *Resolver) Register(p Provider) error {
	name := p.Name()
	if err := checkProvider(name); err != nil {
		return fmt.Errorf("register provider: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.providers[name]; dup {
		return fmt.Errorf("register provider %q: already registered", name)
	}
	if r.providers == nil {
		r.providers = make(map[string]Provider)
	}
	r.providers[name] = p
	return nil
}

// Provider returns the provider registered under name.
func (r *Resolver) Provider(name string) (Provider, error) {
	r.mu.RLock()
	p, ok := r.providers[name]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProvider, name)
	}
	return p, nil
}

// Names returns the registered provider names, sorted.
func (r *Resolver) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.providers))
	for n := range r.providers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (r *Resolver) withTimeout(ctx context.Context, provider string) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.Deadlines.CallFor(provider))
}

// Get resolves ref: the secret Key at Version in Provider, cut to Field.
// It is Fetch followed by Cut.
func (r *Resolver) Get(ctx context.Context, ref Reference) (Secret, error) {
	s, err := r.Fetch(ctx, ref)
	if err != nil {
		return Secret{}, err
	}
	return Cut(ref, s)
}

// Fetch reads the whole value of ref (its Field is not applied: a cache
// keeps one value for every field of a secret). When Version is set, a
// secret whose exact name is "Key@Version" wins over Key at Version. Errors
// wrap the package's sentinels and name the reference, never the value.
func (r *Resolver) Fetch(ctx context.Context, ref Reference) (Secret, error) {
	if err := ref.Validate(); err != nil {
		return Secret{}, err
	}
	p, err := r.Provider(ref.Provider)
	if err != nil {
		return Secret{}, err
	}
	whole := ref
	whole.Field = ""
	if ref.Version != "" {
		// A policy that grants one secret only (not "KEY@VERSION") denies
		// the exact name: that is no answer either, so go on to the version.
		// Each of the two calls has its own budget.
		cctx, cancel := r.withTimeout(ctx, ref.Provider)
		s, err := p.Get(cctx, ref.Key+"@"+ref.Version, "")
		cancel()
		switch KindOf(err) {
		case KindOK:
			s.Key = ref.Key + "@" + ref.Version
			return s, nil
		case KindNotFound, KindPermission:
		default:
			return Secret{}, wrap(whole, err)
		}
	}
	ctx, cancel := r.withTimeout(ctx, ref.Provider)
	defer cancel()
	s, err := p.Get(ctx, ref.Key, ref.Version)
	if err != nil {
		return Secret{}, wrap(whole, err)
	}
	s.Key = ref.Key
	return s, nil
}

// Cut applies ref.Field to s, a value that Fetch returned for ref.
func Cut(ref Reference, s Secret) (Secret, error) {
	if ref.Field == "" {
		return s, nil
	}
	v, err := Field(s.Value, ref.Field)
	if err != nil {
		return Secret{}, wrap(ref, err)
	}
	s.Value = v
	return s, nil
}

// List lists dir in the named provider (see Lister). A provider that cannot
// list yields errors.ErrUnsupported.
func (r *Resolver) List(ctx context.Context, provider, dir string) ([]string, error) {
	p, err := r.Provider(provider)
	if err != nil {
		return nil, err
	}
	l, ok := p.(Lister)
	if !ok {
		return nil, fmt.Errorf("list %s: %w", provider, errors.ErrUnsupported)
	}
	ctx, cancel := r.withTimeout(ctx, provider)
	defer cancel()
	names, err := l.List(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("list %s:%s: %w", provider, dir, Unavailable(err))
	}
	return names, nil
}

// Probe asks the named provider what one small request finds below dir
// (see Prober). A provider that cannot yields errors.ErrUnsupported.
func (r *Resolver) Probe(ctx context.Context, provider, dir string) ([]string, bool, error) {
	p, err := r.Provider(provider)
	if err != nil {
		return nil, false, err
	}
	pr, ok := p.(Prober)
	if !ok {
		return nil, false, fmt.Errorf("probe %s: %w", provider, errors.ErrUnsupported)
	}
	ctx, cancel := r.withTimeout(ctx, provider)
	defer cancel()
	entries, complete, err := pr.Probe(ctx, dir)
	if err != nil {
		return nil, false, fmt.Errorf("probe %s:%s: %w", provider, dir, Unavailable(err))
	}
	return entries, complete, nil
}

// GetBatch reads the current values of keys in provider in few calls (see
// BatchGetter). A provider that cannot yields errors.ErrUnsupported; keys
// that are missing or failed are absent from the result.
func (r *Resolver) GetBatch(ctx context.Context, provider string, keys []string) (map[string]Secret, error) {
	p, err := r.Provider(provider)
	if err != nil {
		return nil, err
	}
	b, ok := p.(BatchGetter)
	if !ok {
		return nil, fmt.Errorf("batch %s: %w", provider, errors.ErrUnsupported)
	}
	ctx, cancel := r.withTimeout(ctx, provider)
	defer cancel()
	got, err := b.GetBatch(ctx, keys)
	if err != nil {
		return got, fmt.Errorf("batch %s: %w", provider, Unavailable(err))
	}
	return got, nil
}

// Abilities returns what the named provider can do besides Get (zero for a
// provider that is not enabled).
func (r *Resolver) Abilities(provider string) Abilities {
	p, err := r.Provider(provider)
	if err != nil {
		return Abilities{}
	}
	return AbilitiesOf(p)
}

// CheckHealth asks the named provider whether its backend answers (see
// HealthChecker). A provider that cannot yields errors.ErrUnsupported.
func (r *Resolver) CheckHealth(ctx context.Context, provider string) error {
	p, err := r.Provider(provider)
	if err != nil {
		return err
	}
	h, ok := p.(HealthChecker)
	if !ok {
		return fmt.Errorf("health %s: %w", provider, errors.ErrUnsupported)
	}
	ctx, cancel := r.withTimeout(ctx, provider)
	defer cancel()
	if err := h.CheckHealth(ctx); err != nil {
		return fmt.Errorf("health %s: %w", provider, Unavailable(err))
	}
	return nil
}

// Renew extends lease in the named provider (see Renewer). A provider that
// cannot yields errors.ErrUnsupported.
func (r *Resolver) Renew(ctx context.Context, provider string, lease Lease) (Lease, error) {
	p, err := r.Provider(provider)
	if err != nil {
		return Lease{}, err
	}
	rn, ok := p.(Renewer)
	if !ok {
		return Lease{}, fmt.Errorf("renew %s: %w", provider, errors.ErrUnsupported)
	}
	ctx, cancel := r.withTimeout(ctx, provider)
	defer cancel()
	l, err := rn.Renew(ctx, lease)
	if err != nil {
		return Lease{}, fmt.Errorf("renew a lease of %s: %w", provider, Unavailable(err))
	}
	return l, nil
}

func wrap(ref Reference, err error) error {
	return fmt.Errorf("%s: %w", ref, Unavailable(err))
}

// Unavailable makes a deadline that expired inside a provider count as
// ErrUnavailable, so that callers need to test one sentinel only. Other
// errors are returned as they are.
func Unavailable(err error) error {
	if errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrUnavailable) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// Field returns the top-level field name of the JSON object in value: a
// string raw, anything else as compact JSON. A value that is not a JSON
// object, or has no such field, yields ErrNotFound.
func Field(value []byte, name string) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(value, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%w: field %q: value is not a JSON object", ErrNotFound, name)
	}
	raw, ok := obj[name]
	if !ok {
		return nil, fmt.Errorf("%w: no field %q", ErrNotFound, name)
	}
	if len(raw) > 0 && raw[0] == '"' {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return nil, fmt.Errorf("field %q: %w", name, err) // unreachable for valid JSON
		}
		return []byte(str), nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("field %q: %w", name, err) // unreachable for valid JSON
	}
	return buf.Bytes(), nil
}
