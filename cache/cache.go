// Package cache is secretfs's engine: it keeps secret values and listings
// in memory in front of a resolver and decides, in one place, when a
// backend is asked.
//
// The filesystem asks the Cache; the Cache asks the resolver (which owns
// the grammar, the dispatch to providers, #FIELD and the kinds of error).
// One value is kept per (provider, key, version): every #FIELD of a secret
// is cut from it, so they cost one backend call together.
//
// The engine is in five parts, a file each:
//
//   - cache.go: the read. A fresh answer is served from memory; a value
//     whose key or provider is failing is served stale at once; anything
//     else waits for a call.
//   - store.go: what is held, in three bounded stores (values, listings,
//     negatives), each entry with the generation of the call it came from.
//   - flight.go: calls in flight, their generations and budgets, what each
//     kind of answer does, refresh ahead and a key's own back-off.
//   - health.go: provider health, the call that confirms an outage, and
//     the probe that finds the end of one.
//   - lease.go: the life of a leased value (renewal, replacement ahead of
//     its end, idle leases let go).
//
// The life of an entry:
//
//   - fresh: for TTL from when the call that fetched it began (TTL minus
//     up to Jitter of it, so that keys fetched together do not expire
//     together; shorter when the backend says the value must not live
//     longer, e.g. a Vault lease). Reads are served from memory.
//   - refresh ahead: an entry that was read while fresh is fetched again in
//     the background once three quarters of its freshness have passed, so
//     that a key in use never makes a reader wait on a healthy backend. A
//     key nobody reads is not refreshed: idle keys cost no backend calls, a
//     hot key one call per TTL.
//   - expired: the next read asks the backend again. Concurrent reads of one
//     key share that one call (singleflight).
//   - stale: while the key's calls fail, or its provider is down, the last
//     good value is served for up to MaxStale past its expiry.
//
// A value made for its read (a lease: a Vault dynamic secret, an issued
// certificate) lives by its lease instead: renewed while it is read,
// replaced ahead of its end, never served past it (lease.go).
//
// Deadlines: every backend call runs under its own budget (Deadlines), never
// under the context of the reader who started it. A reader's context only
// bounds how long that reader waits; one whose deadline passes gets the
// last good value when there is one, else ErrUnavailable.
//
// Memory is bounded whatever is looked up: values, listings and negative
// answers each have their own bounded store, what a provider can do (list,
// probe, batch, health) is known from its type, and per-provider state is
// per enabled provider.
//
// When a key's value changes (a new version, another value, a deletion) the
// Cache updates its state first and then calls the functions given to
// OnChange, so the filesystem can tell the kernel. Values never appear in
// logs, errors or counters.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/secretfs/secretfs/resolver"
)

// Defaults for Options fields left zero (MaxStale has none: zero means
// never serve stale).
const (
	DefaultTTL         = 5 * time.Minute
	DefaultNegativeTTL = 30 * time.Second
	DefaultMaxStale    = time.Hour
	DefaultMaxEntries  = 10000
	// DefaultMaxNegativeBytes bounds the negative store at 32 MiB.
	DefaultMaxNegativeBytes = 32 << 20
	DefaultJitter           = 0.1
	DefaultProbeMin         = time.Second
	DefaultProbeMax         = 30 * time.Second
)

// Source is what the Cache needs of resolver.Resolver.
type Source interface {
	// Fetch reads the whole value of ref (ref.Field is ignored).
	Fetch(ctx context.Context, ref resolver.Reference) (resolver.Secret, error)
	List(ctx context.Context, provider, dir string) ([]string, error)
	Probe(ctx context.Context, provider, dir string) ([]string, bool, error)
	GetBatch(ctx context.Context, provider string, keys []string) (map[string]resolver.Secret, error)
	// CheckHealth asks whether provider's backend answers at all, with a
	// call about no secret (resolver.HealthChecker).
	CheckHealth(ctx context.Context, provider string) error
	// Abilities says what provider can do besides Get, from its type.
	Abilities(provider string) resolver.Abilities
	Names() []string
}

// Clock is the time the Cache runs on; tests give it a fake one.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface{ Stop() bool }

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Options configures a Cache. Zero fields take the defaults above.
type Options struct {
	TTL         time.Duration
	NegativeTTL time.Duration
	// MaxStale is how long past expiry a value may be served while its
	// backend is unavailable; zero: never.
	MaxStale time.Duration
	// MaxEntries bounds the values held; MaxListings the listings and
	// MaxNegative the negative answers and remembered failures (each by
	// default MaxEntries), apart.
	MaxEntries  int
	MaxListings int
	MaxNegative int
	// MaxNegativeBytes bounds what the negative answers take, by their
	// names and errors (default DefaultMaxNegativeBytes): names come from
	// whoever looks them up, and may be long.
	MaxNegativeBytes int
	Jitter           float64 // fraction of the TTL, 0..1
	// Deadlines decide the budget of every backend call (see
	// resolver.Deadlines).
	Deadlines resolver.Deadlines
	// ProbeMin and ProbeMax bound the back-off of the probe that finds out
	// when a provider that is down is back, and of a key whose own calls
	// fail.
	ProbeMin, ProbeMax time.Duration
	Clock              Clock
	// Observer, when set, is told of every backend call and every stale
	// value served (metrics). It must not block.
	Observer Observer
	// Rand returns a number in [0,1) for jitter; tests may fix it.
	Rand   func() float64
	Logger *slog.Logger
	// LeaseIdle is how long after its last read a leased key is still
	// renewed and replaced ahead (default DefaultLeaseIdle; see lease.go).
	LeaseIdle time.Duration
	// Locker, when set, copies every value the cache keeps, and every
	// field it cuts, into memory that never reaches swap (--mlock).
	Locker Locker
}

// Locker copies a value into locked memory (see package locked). The copy
// is valid while hold is reachable; a Secret carries it in Hold. A value
// that finds no locked memory is an error of no known kind: the call
// fails (EIO), and the provider is not thought down.
type Locker interface {
	Copy(b []byte) (copy []byte, hold any, err error)
}

// lockedCut is field of k's value of generation gen, cut as s, in locked
// memory: the copy its entry keeps, or a new one it then keeps.
func (c *Cache) lockedCut(k key, gen uint64, field string, s resolver.Secret) (resolver.Secret, error) {
	c.mu.Lock()
	e := c.entries[k]
	if e != nil && e.gen == gen {
		if kept, ok := e.cuts[field]; ok {
			c.mu.Unlock()
			return kept, nil
		}
	}
	c.mu.Unlock()
	v, err := c.lock(s, nil)
	if err != nil {
		return resolver.Secret{}, err
	}
	s = v.(resolver.Secret)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[k]; e != nil && e.gen == gen {
		if e.cuts == nil {
			e.cuts = make(map[string]resolver.Secret)
		}
		e.cuts[field] = s
	}
	return s, nil
}

// lock copies val's value into locked memory, where the cache has a
// Locker.
func (c *Cache) lock(val any, err error) (any, error) {
	s, ok := val.(resolver.Secret)
	if err != nil || !ok || c.opts.Locker == nil {
		return val, err
	}
	if s.Value, s.Hold, err = c.opts.Locker.Copy(s.Value); err != nil {
		return nil, fmt.Errorf("%s: keeping the value in locked memory: %w", s.Key, err)
	}
	return s, nil
}

// Observer is told what the cache did, for metrics. Names of secrets and
// values never reach it: only providers, results and durations.
type Observer interface {
	// BackendCall: one call to provider ended with result (see Result)
	// after d.
	BackendCall(provider, result string, d time.Duration)
	// StaleServed: a value of provider was served past its expiry.
	StaleServed(provider string, past time.Duration)
}

// Result names the outcome of a backend call for metrics: a kind of error
// (resolver.Kind's names) or "throttled".
func Result(err error) string {
	if errors.Is(err, resolver.ErrThrottled) {
		return "throttled"
	}
	return resolver.KindOf(err).String()
}

type noObserver struct{}

func (noObserver) BackendCall(string, string, time.Duration) {}
func (noObserver) StaleServed(string, time.Duration)         {}

// Stats counts what the cache did. Values never appear here.
type Stats struct {
	Hits      uint64 // served fresh from memory (including cached not-found)
	Misses    uint64 // not fresh in memory: the reader waited for a backend call
	Stale     uint64 // served past expiry because the backend was unavailable
	Calls     uint64 // calls made to providers
	Refreshes uint64 // of those, refreshes ahead of expiry
	Throttled uint64 // of those, answered "slow down" (resolver.ErrThrottled)
}

// Change says that what a key reads as has changed: a new value, or the
// value is gone (Deleted).
type Change struct {
	Ref     resolver.Reference // Provider, Key, Version; no Field
	Deleted bool
}

// Value is a secret as the cache serves it.
type Value struct {
	resolver.Secret
	// FreshFor is how long the value stays fresh from now; zero when it is
	// served stale (or is the newest there is, expired on request).
	FreshFor time.Duration
	// Stale says the value is served past its expiry because its backend
	// or its key's calls fail.
	Stale bool
	// Gen is the generation of the backend call the value came from. A
	// read of the key that begins after this one returned never gets a
	// smaller one (unless the value was evicted or forgotten meanwhile).
	Gen uint64
}

// Cache is the engine. It is safe for concurrent use.
type Cache struct {
	src   Source
	opts  Options
	log   *slog.Logger
	group singleflight.Group // calls in flight, by key
	gen   atomic.Uint64      // the last generation given to a call
	can   sync.Map           // provider name → resolver.Abilities
	// ctx ends with Close; backend calls and probes run under it.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	entries   map[key]*entry     // guarded by mu
	values    *store             // guarded by mu; entries holding a secret value
	listings  *store             // guarded by mu; entries holding a non-empty listing
	negatives *store             // guarded by mu; negative answers, remembered failures, empty listings below the top
	floor     map[string]uint64  // guarded by mu; by provider: calls of an older generation began before a Forget or Expire, store nothing, and are joined by no later read
	health    map[string]*health // guarded by mu; by provider
	onChange  []func(Change)     // guarded by mu
	holds     map[key]int        // guarded by mu; by value key: how many holders keep it in use (Hold)
	times     times              // guarded by mu; starts as opts' and changes with SetTimes

	hits, misses, stale, calls, refreshes, throttled atomic.Uint64
	waiting                                          atomic.Int64 // readers that have joined a call and wait for it

	bgMu   sync.Mutex
	bgIdle sync.Cond // on bgMu; broadcast when bgN drops to zero
	bgN    int       // guarded by bgMu; background tasks running
	closed bool      // guarded by bgMu; no new background tasks
}

// times are the durations a reload may change.
type times struct{ ttl, negativeTTL, maxStale time.Duration }

// New returns a Cache in front of src with opts, defaults filled in. Close
// it to stop background work.
func New(src Source, opts Options) *Cache {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = DefaultNegativeTTL
	}
	if opts.MaxStale < 0 {
		opts.MaxStale = 0
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.MaxListings <= 0 {
		opts.MaxListings = opts.MaxEntries
	}
	if opts.MaxNegative <= 0 {
		opts.MaxNegative = opts.MaxEntries
	}
	if opts.MaxNegativeBytes <= 0 {
		opts.MaxNegativeBytes = DefaultMaxNegativeBytes
	}
	if opts.Jitter <= 0 || opts.Jitter > 1 {
		opts.Jitter = DefaultJitter
	}
	if opts.ProbeMin <= 0 {
		opts.ProbeMin = DefaultProbeMin
	}
	if opts.ProbeMax < opts.ProbeMin {
		opts.ProbeMax = max(DefaultProbeMax, opts.ProbeMin)
	}
	if opts.LeaseIdle <= 0 {
		opts.LeaseIdle = DefaultLeaseIdle
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Observer == nil {
		opts.Observer = noObserver{}
	}
	c := &Cache{
		src: src, opts: opts, log: opts.Logger,
		entries:   make(map[key]*entry),
		values:    newStore(opts.MaxEntries, 0),
		listings:  newStore(opts.MaxListings, 0),
		negatives: newStore(opts.MaxNegative, opts.MaxNegativeBytes),
		floor:     make(map[string]uint64), health: make(map[string]*health),
		holds: make(map[key]int),
		times: times{opts.TTL, opts.NegativeTTL, opts.MaxStale},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.bgIdle.L = &c.bgMu
	return c
}

// background runs f in a goroutine that Close waits for, unless the cache
// is closed; it reports whether f runs.
func (c *Cache) background(f func()) bool {
	c.bgMu.Lock()
	if c.closed {
		c.bgMu.Unlock()
		return false
	}
	c.bgN++
	c.bgMu.Unlock()
	go func() {
		defer func() {
			c.bgMu.Lock()
			c.bgN--
			if c.bgN == 0 {
				c.bgIdle.Broadcast()
			}
			c.bgMu.Unlock()
		}()
		f()
	}()
	return true
}

// waitIdle waits until no background task runs.
func (c *Cache) waitIdle() {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	for c.bgN > 0 {
		c.bgIdle.Wait()
	}
}

// Close stops refreshes and probes, ends the backend calls under way (their
// context is canceled) and waits for those of its background tasks.
func (c *Cache) Close() {
	c.bgMu.Lock()
	c.closed = true
	c.bgMu.Unlock()
	c.cancel()
	c.mu.Lock()
	for _, e := range c.entries {
		e.stopTimers()
	}
	for _, h := range c.health {
		if h.timer != nil {
			h.timer.Stop()
		}
	}
	c.mu.Unlock()
	c.waitIdle()
}

// SetTimes changes the TTL, the negative TTL and MaxStale of what is
// stored from now on (a configuration reload); zero TTLs keep the current.
func (c *Cache) SetTimes(ttl, negativeTTL, maxStale time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ttl > 0 {
		c.times.ttl = ttl
	}
	if negativeTTL > 0 {
		c.times.negativeTTL = negativeTTL
	}
	c.times.maxStale = max(maxStale, 0)
}

// Forget drops what is held for provider at and below dir ("" for all of
// it), so that the next read asks the backend; no call that began before
// stores its answer. The kernel is told of the values through OnChange. A
// reload that changes what a provider shows calls it.
func (c *Cache) Forget(provider, dir string) {
	var changes []Change
	c.mu.Lock()
	c.floor[provider] = c.gen.Add(1)
	for k, e := range c.entries {
		if !k.under(provider, dir) {
			continue
		}
		if k.op == opGet && e.val != nil {
			changes = append(changes, Change{Ref: k.ref(), Deleted: true})
		}
		c.drop(e)
	}
	subs := c.onChange
	c.mu.Unlock()
	for _, ch := range changes {
		c.notify(subs, ch)
	}
}

// Expire makes what is held for provider at and below dir ("" for all of
// it) expired, so that the next read asks the backend, and has the kernel
// forget its copies; a good value is kept, and served stale as usual if
// the backend does not answer. No call that began before stores its answer
// or is joined by a later read. A refresh of a directory on request calls
// it.
func (c *Cache) Expire(provider, dir string) {
	var changes []Change
	now := c.opts.Clock.Now()
	c.mu.Lock()
	c.floor[provider] = c.gen.Add(1)
	for k, e := range c.entries {
		if !k.under(provider, dir) {
			continue
		}
		if e.val == nil {
			c.drop(e)
			continue
		}
		if now.Before(e.expires) {
			e.expires, e.refreshAt = now, now
		}
		e.failures, e.retryAt = 0, time.Time{} // asked again at the next read
		e.stopTimers()
		if k.op == opGet {
			changes = append(changes, Change{Ref: k.ref()})
		}
	}
	subs := c.onChange
	c.mu.Unlock()
	for _, ch := range changes {
		c.notify(subs, ch)
	}
}

// OnChange registers f to be called, from the goroutine that learned of
// it and after the cache's state is updated, for every change of a key's
// value. f must not block.
func (c *Cache) OnChange(f func(Change)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onChange = append(c.onChange, f)
}

// Names returns the enabled providers.
func (c *Cache) Names() []string { return c.src.Names() }

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	return Stats{Hits: c.hits.Load(), Misses: c.misses.Load(), Stale: c.stale.Load(),
		Calls: c.calls.Load(), Refreshes: c.refreshes.Load(), Throttled: c.throttled.Load()}
}

// Len returns the number of values and listings held, and of negative
// answers (and remembered failures) held.
func (c *Cache) Len() (values, negatives int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.values.lru.Len() + c.listings.lru.Len(), c.negatives.lru.Len()
}

// Get returns ref's value, cut to ref.Field. ctx bounds only this reader's
// wait.
func (c *Cache) Get(ctx context.Context, ref resolver.Reference) (Value, error) {
	if err := ref.Validate(); err != nil {
		return Value{}, err
	}
	a, err := c.read(ctx, key{op: opGet, provider: ref.Provider, name: ref.Key, version: ref.Version})
	if err != nil {
		return Value{}, err
	}
	s, err := resolver.Cut(ref, a.val.(resolver.Secret))
	if err != nil {
		return Value{}, err
	}
	if ref.Field != "" && c.opts.Locker != nil {
		if s, err = c.lockedCut(key{op: opGet, provider: ref.Provider, name: ref.Key, version: ref.Version}, a.gen, ref.Field, s); err != nil {
			return Value{}, err
		}
	}
	fresh := a.freshFor
	if s.Lease != nil {
		// A leased value stays fresh for long; the kernel is told to ask
		// again within the TTL, so that a file in use is seen to be read
		// (and its lease kept).
		c.mu.Lock()
		fresh = min(fresh, c.times.ttl)
		c.mu.Unlock()
	}
	return Value{Secret: s, FreshFor: fresh, Stale: a.stale, Gen: a.gen}, nil
}

// List returns the listing of dir in provider (see resolver.Lister) and how
// long it stays fresh.
func (c *Cache) List(ctx context.Context, provider, dir string) (*Listing, time.Duration, error) {
	a, err := c.read(ctx, key{op: opList, provider: provider, name: dir})
	if err != nil {
		return nil, 0, err
	}
	return a.val.(*Listing), a.freshFor, nil
}

// Probe returns what one small request finds below dir in provider (see
// resolver.Prober): a Listing that may not be Complete.
func (c *Cache) Probe(ctx context.Context, provider, dir string) (*Listing, time.Duration, error) {
	a, err := c.read(ctx, key{op: opProbe, provider: provider, name: dir})
	if err != nil {
		return nil, 0, err
	}
	return a.val.(*Listing), a.freshFor, nil
}

// read serves k: from memory when fresh; stale at once while its provider
// is down or its key backs off after a failure; else through one shared
// call (which retries a failing key), not made while the provider is known
// to be down.
func (c *Cache) read(ctx context.Context, k key) (answer, error) {
	if err := c.able(k); err != nil {
		return answer{}, err
	}
	now := c.opts.Clock.Now()
	c.mu.Lock()
	var (
		down       bool
		confirming <-chan struct{}
		epoch      uint64
	)
	if h := c.health[k.provider]; h != nil {
		down, confirming, epoch = h.down, h.confirming, h.epoch
	}
	if e, ok := c.entries[k]; ok {
		e.lastRead = now
		// A key's own failure holds back its reads until its back-off
		// ends, unless its provider has come back from an outage since.
		backingOff := e.failures > 0 && now.Before(e.retryAt) && e.epoch == epoch
		switch {
		case now.Before(e.expires) && (e.val != nil || e.failures == 0 || backingOff):
			c.touch(e)
			e.used = true
			refresh := e.val != nil && !now.Before(e.refreshAt) && c.startRefresh(e)
			a := answer{val: e.val, gen: e.gen, freshFor: e.expires.Sub(now), err: e.err}
			c.mu.Unlock()
			c.hits.Add(1)
			if refresh {
				c.refresh(k)
			}
			if a.val == nil {
				return answer{}, a.err
			}
			return a, nil
		case e.servableStale(now) && (down || confirming != nil || backingOff):
			// The provider is down (its probe finds out when it is back),
			// or an outage is being confirmed, or this key's calls fail
			// and its back-off has not ended: serve the last good value
			// at once.
			c.touch(e)
			e.used = true
			a := answer{val: e.val, gen: e.gen, stale: true, past: now.Sub(e.expires)}
			c.mu.Unlock()
			c.stale.Add(1)
			c.opts.Observer.StaleServed(k.provider, a.past)
			return a, nil
		case backingOff && e.err != nil:
			// Failing, with nothing to serve: the failure until the key's
			// back-off ends.
			err := e.err
			c.mu.Unlock()
			c.hits.Add(1)
			return answer{}, err
		}
	}
	c.mu.Unlock()
	if confirming != nil && !down {
		// Whether the provider is down is being found out: wait for that
		// (within this reader's budget) rather than for a call of our own.
		select {
		case <-confirming:
		case <-ctx.Done():
			return answer{}, gaveUp(ctx, k)
		}
		down = c.Down(k.provider)
	}
	if down {
		// Nothing new waits on a provider known to be down. The probe
		// asks for this key too, so that an outage confirmed by keys that
		// fail alone does not last.
		c.mu.Lock()
		if h := c.health[k.provider]; h != nil && h.down && k.op == opGet {
			h.wanted = k
		}
		c.mu.Unlock()
		return answer{}, fmt.Errorf("%s: %w", k, errProviderDown)
	}
	c.misses.Add(1)

	c.waiting.Add(1)
	defer c.waiting.Add(-1)
	// A call whose answer is older than one held since asks again, a few
	// times at most (see older).
	for range maxSuperseded {
		a, done, err := c.await(ctx, k)
		if !done || !errors.Is(err, errSuperseded) {
			return a, err
		}
	}
	return answer{}, resolver.Unavailable(fmt.Errorf("%s: answers kept arriving older than one held", k))
}

// maxSuperseded bounds how often a read asks again after an answer older
// than one held.
const maxSuperseded = 3

// await waits for the call for k; done is false when ctx ended first.
func (c *Cache) await(ctx context.Context, k key) (answer, bool, error) {
	ch := c.flight(k, false, false)
	select {
	case res := <-ch:
		a := res.Val.(answer)
		if a.val == nil {
			return answer{}, true, a.err
		}
		if a.stale {
			c.stale.Add(1)
			c.opts.Observer.StaleServed(k.provider, a.past)
		}
		return a, true, nil
	case <-ctx.Done():
		// Out of time: a value that may be served stale beats an error.
		if a, ok := c.staleValue(k); ok && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			c.stale.Add(1)
			c.opts.Observer.StaleServed(k.provider, 0)
			c.log.Warn("backend did not answer in time; serving the last good value", "secret", k.String())
			return a, false, nil
		}
		return answer{}, false, gaveUp(ctx, k)
	}
}

// gaveUp is the error of a reader whose ctx ended while it waited for what
// (a backend call, or the confirmation of an outage).
func gaveUp(ctx context.Context, what fmt.Stringer) error {
	return resolver.Unavailable(fmt.Errorf("%s: waiting for backend: %w", what, ctx.Err()))
}

// staleValue returns k's last good value if it may still be served stale.
func (c *Cache) staleValue(k key) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Clock.Now()
	if e, ok := c.entries[k]; ok && e.servableStale(now) {
		return answer{val: e.val, gen: e.gen, stale: true, past: max(now.Sub(e.expires), 0)}, true
	}
	return answer{}, false
}
