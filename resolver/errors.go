package resolver

import "errors"

// Sentinel errors. Providers wrap them with %w; callers test with errors.Is.
// No error produced by this module ever carries a secret value.
var (
	// ErrNotFound: the secret, version or field does not exist (or is
	// deleted, or is outside what this instance is configured to expose).
	ErrNotFound = errors.New("secret not found")
	// ErrUnknownProvider: the reference names a provider that is not enabled.
	ErrUnknownProvider = errors.New("unknown provider")
	// ErrInvalidReference: the reference does not follow the grammar.
	ErrInvalidReference = errors.New("invalid reference")
	// ErrPermission: the backend refused access.
	ErrPermission = errors.New("permission denied")
	// ErrUnavailable: the backend is down, sealed, throttling or did not
	// answer in time. A cache may serve the last good value instead.
	ErrUnavailable = errors.New("backend unavailable")
)
