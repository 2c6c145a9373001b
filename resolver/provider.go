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

// Renewer is the optional ability to extend a lease (see Lease) without
// reading the value again. Renew asks for about the lease's current term
// and returns the lease as the backend now states it: Start is now, and
// Renewable is false once the backend granted less than was asked (its
// maximum is near: the next value must be a new one). A lease the backend
// no longer knows, or will not renew, is an error wrapping ErrNotFound.
type Renewer interface {
	Renew(ctx context.Context, lease Lease) (Lease, error)
}

// Abilities are the optional abilities a provider's type has. They are
// known from the type, once: a caller never learns them per directory.
type Abilities struct {
	List, Probe, Batch, Health, Renew bool
}

// AbilitiesOf returns what p can do besides Get.
func AbilitiesOf(p Provider) Abilities {
	_, list := p.(Lister)
	_, probe := p.(Prober)
	_, batch := p.(BatchGetter)
	_, health := p.(HealthChecker)
	_, renew := p.(Renewer)
	return Abilities{List: list, Probe: probe, Batch: batch, Health: health, Renew: renew}
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
	// NotAfter, when set, is when the value stops being valid (an expiry
	// date the backend keeps but does not enforce): it is neither fresh
	// nor served stale from then on, while until then it is served stale
	// in an outage as any value is.
	NotAfter time.Time
	// Key is the key the value was read under, set by the Resolver: the
	// reference's Key, or "Key@Version" when a secret is named exactly
	// so (see Resolver.Fetch). Rules are matched on it.
	Key string
	// Lease, when set, says the value was made for this read (a Vault
	// dynamic secret, an issued certificate): it is valid until the lease
	// expires, and reading again makes another.
	Lease *Lease
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

// DefaultRenewBefore is the part of a lease's term left when a new value
// is fetched in its place: one third.
const DefaultRenewBefore = 1.0 / 3

// Lease is what a backend says of a value it made for one read: until
// when it is valid, and whether it can be extended.
type Lease struct {
	// ID names the lease to its backend, to renew or revoke it; empty
	// for a value that has an end but no lease (a certificate). It is
	// no secret value, but it is never logged either.
	ID string
	// Start is when the current term began: the value was made, or the
	// lease last renewed.
	Start time.Time
	// Expires ends the term: past it the value is never served.
	Expires time.Time
	// Renewable says Expires may be extended (see Renewer).
	Renewable bool
	// RenewBefore is the part of the term (0 to 1) left when a new value
	// is fetched in this one's place, once it cannot be renewed; zero
	// means DefaultRenewBefore.
	RenewBefore float64
}

// Term is the length of the lease's current term.
func (l Lease) Term() time.Duration { return l.Expires.Sub(l.Start) }

// ReplaceAt is when a new value is due in this one's place: when
// RenewBefore of the term is left.
func (l Lease) ReplaceAt() time.Time {
	rb := l.RenewBefore
	if rb <= 0 || rb >= 1 {
		rb = DefaultRenewBefore
	}
	return l.Expires.Add(-time.Duration(rb * float64(l.Term())))
}

// String names the lease by its times, never its ID.
func (l Lease) String() string {
	return fmt.Sprintf("Lease{term=%s, renewable=%t}", l.Term().Round(time.Second), l.Renewable)
}
