package resolver

import (
	"context"
	"errors"
)

// Sentinel errors. Providers wrap them with %w; callers test with errors.Is
// or, to decide what to do, with KindOf. No error produced by this module
// ever carries a secret value.
var (
	// ErrNotFound: the secret, version or field does not exist (or is
	// deleted, or is outside what this instance is configured to expose).
	ErrNotFound = errors.New("secret not found")
	// ErrUnknownProvider: the reference names a provider that is not enabled.
	ErrUnknownProvider = errors.New("unknown provider")
	// ErrInvalidReference: the reference does not follow the grammar.
	ErrInvalidReference = errors.New("invalid reference")
	// ErrPermission: the backend refused access to this secret (a policy
	// says no). A credential that stopped working is not this: it is
	// ErrUnavailable, because it says nothing about the secret.
	ErrPermission = errors.New("permission denied")
	// ErrUnavailable: the backend is down, sealed, throttling, did not
	// answer in time, or rejected secretfs's own credentials. A cache may
	// serve the last good value instead.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrThrottled: the backend asked secretfs to slow down. Providers wrap
	// it together with ErrUnavailable (it is a kind of unavailability); it
	// is told apart only to be counted.
	ErrThrottled = errors.New("throttled")
)

// Kind is what an error means to the one who asked. It is the one
// classification of errors: the filesystem maps it to an errno, the CLI to
// an exit code, and the cache decides by it what to keep.
type Kind int

const (
	KindOK          Kind = iota // no error
	KindNotFound                // ErrNotFound: a real answer, cached as negative
	KindInvalid                 // ErrInvalidReference or ErrUnknownProvider: never reaches a backend
	KindPermission              // ErrPermission: a real answer, cached as negative
	KindUnavailable             // ErrUnavailable or a deadline: the backend did not answer
	KindCanceled                // the one who asked went away (context.Canceled)
	KindUnsupported             // errors.ErrUnsupported: the provider cannot do this
	KindUnknown                 // anything else: logged, treated like an outage by the cache
)

var kindNames = [...]string{"ok", "not_found", "invalid", "permission", "unavailable", "canceled", "unsupported", "unknown"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// KindOf classifies err. A deadline counts as unavailable; a cancellation
// (the asker went away) wins over everything but a real answer.
func KindOf(err error) Kind {
	switch {
	case err == nil:
		return KindOK
	case errors.Is(err, ErrNotFound):
		return KindNotFound
	case errors.Is(err, ErrInvalidReference), errors.Is(err, ErrUnknownProvider):
		return KindInvalid
	case errors.Is(err, ErrPermission):
		return KindPermission
	case errors.Is(err, context.Canceled):
		return KindCanceled
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return KindUnavailable
	case errors.Is(err, errors.ErrUnsupported):
		return KindUnsupported
	default:
		return KindUnknown
	}
}
