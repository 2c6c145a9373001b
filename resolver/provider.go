package resolver

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Provider is a secret backend. Implementations must be safe for concurrent
// use and must honour ctx: return when it is done, with an error that wraps
// ErrUnavailable (or ctx.Err()).
type Provider interface {
	// Name is the first element of a reference ("env", "aws", "vault").
	Name() string
	// Get returns the secret key at version (empty: the current version).
	// A missing secret or version is an error wrapping ErrNotFound.
	Get(ctx context.Context, key, version string) (Secret, error)
}

// Lister is the optional ability to list keys. A provider that cannot list
// still serves reads of names its user already knows.
type Lister interface {
	// List returns the entries directly below dir ("" for the top), one
	// level deep, relative to dir. An entry that has entries below it ends
	// in "/". A name that is both a secret and a directory appears twice,
	// as "name" and "name/". Order does not matter.
	List(ctx context.Context, dir string) ([]string, error)
}

// Prober is the optional ability of a provider whose listing of a directory
// costs its whole subtree (AWS Secrets Manager's names are flat, so listing
// "a/" pages through every secret below it). Probe makes one small request
// below dir and returns the entries it found, named as List names them, and
// whether they are all there are. The filesystem then decides a name by what
// a probe found (of the directory, else of the name itself) and by reading
// it, never by listing a large subtree. A provider that can probe only part
// of its tree returns errors.ErrUnsupported for the rest.
type Prober interface {
	Probe(ctx context.Context, dir string) (entries []string, complete bool, err error)
}

// BatchGetter is the optional ability to read the current values of many
// keys in few calls. Keys that are missing or failed are absent from the
// result; a provider whose backend turns out not to support batches returns
// errors.ErrUnsupported.
type BatchGetter interface {
	GetBatch(ctx context.Context, keys []string) (map[string]Secret, error)
}

// HealthChecker is the optional ability to ask the backend whether it
// answers at all, with a call that is about no secret (Vault's sys/health).
// CheckHealth returns nil when the backend serves reads, an error wrapping
// ErrUnavailable when it does not (down, sealed, a standby, throttling).
// A cache uses it to tell one key's failure from the backend's.
type HealthChecker interface {
	CheckHealth(ctx context.Context) error
}

// Abilities are the optional abilities a provider's type has. They are
// known from the type, once: a caller never learns them per directory.
type Abilities struct {
	List, Probe, Batch, Health bool
}

// AbilitiesOf returns what p can do besides Get.
func AbilitiesOf(p Provider) Abilities {
	_, list := p.(Lister)
	_, probe := p.(Prober)
	_, batch := p.(BatchGetter)
	_, health := p.(HealthChecker)
	return Abilities{List: list, Probe: probe, Batch: batch, Health: health}
}

// Secret is a value with what the backend says about it.
type Secret struct {
	// Value is the content, byte for byte. Never log it.
	Value []byte
	// Version identifies the version that was returned, if the backend has
	// versions ("3", an AWS version id).
	Version string
	// Created is when this version was created; zero if unknown.
	Created time.Time
	// MaxAge, when positive, bounds how long the value may be cached (a
	// Vault lease, for example).
	MaxAge time.Duration
	// Key is the key the value was read under, set by the Resolver: the
	// reference's Key, or "Key@Version" when a secret is named exactly
	// so (see Resolver.Fetch). Rules are matched on it.
	Key string
	// Hold, when set, keeps the memory Value lies in (locked memory, see
	// package locked) valid while the Secret is reachable: whoever keeps
	// Value keeps the Secret, or Hold with it.
	Hold any
}

// String keeps the value out of fmt output.
func (s Secret) String() string {
	return fmt.Sprintf("Secret{version=%q, %d bytes}", s.Version, len(s.Value))
}

// GoString keeps the value out of %#v.
func (s Secret) GoString() string { return s.String() }

// LogValue keeps the value out of slog output.
func (s Secret) LogValue() slog.Value {
	return slog.GroupValue(slog.String("version", s.Version), slog.Int("bytes", len(s.Value)))
}
