package resolver

import "time"

// Deadlines is the one policy of how long anything may take. Every budget
// is decided here, from one number per provider:
//
//   - a backend call: Call (--timeout), or the provider's own (an exec
//     entry's timeout:);
//   - reading a value: one call, or two for KEY@VERSION (the secret named
//     exactly so, then the version), each with its own budget;
//   - a request of the filesystem (a lookup, a readdir, a template's
//     fetch): twice a call, however many steps it takes (a listing, a
//     probe, the value, a confirmation). That is the longest a reader
//     waits on a backend; with a value to serve stale, it waits less.
type Deadlines struct {
	Call time.Duration
	// Own are providers' own budgets for a call, in place of Call.
	Own map[string]time.Duration
}

// CallFor is the budget of one backend call of provider.
func (d Deadlines) CallFor(provider string) time.Duration {
	if t, ok := d.Own[provider]; ok && t > 0 {
		return t
	}
	if d.Call > 0 {
		return d.Call
	}
	return DefaultTimeout
}

// FetchFor is the budget of reading ref's value: a call, or two for a
// version (see Resolver.Fetch).
func (d Deadlines) FetchFor(ref Reference) time.Duration {
	if ref.Version != "" {
		return 2 * d.CallFor(ref.Provider)
	}
	return d.CallFor(ref.Provider)
}

// RequestFor is the longest one request of the filesystem waits on
// provider, whatever steps it takes.
func (d Deadlines) RequestFor(provider string) time.Duration {
	return 2 * d.CallFor(provider)
}
