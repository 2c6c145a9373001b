// Package cache is secretfs's engine: it keeps secret values and listings
// in memory in front of a resolver and decides, in one place, when a
// backend is asked.
//
// The filesystem asks the Cache; the Cache asks the resolver (which owns
// the grammar, the dispatch to providers, #FIELD and the kinds of error).
// One value is kept per (provider, key, version): every #FIELD of a secret
// is cut from it, so they cost one backend call together.
//
// The life of an entry:
//
//   - fresh: for TTL after it was fetched (TTL minus up to Jitter of it, so
//     that keys fetched together do not expire together; shorter when the
//     backend says the value must not live longer, e.g. a Vault lease).
//     Reads are served from memory.
//   - refresh ahead: an entry that was read while fresh is fetched again in
//     the background once three quarters of its freshness have passed, so
//     that a key in use never makes a reader wait on a healthy backend. A
//     key nobody reads is not refreshed: idle keys cost no backend calls, a
//     hot key one call per TTL.
//   - expired: the next read asks the backend again. Concurrent reads of one
//     key share that one call (singleflight).
//   - stale: while the backend is unavailable, the last good value is served
//     for up to MaxStale past its expiry.
//
// Deadlines: every backend call runs under its own budget (Timeout), never
// under the context of the reader who started it. A reader's context only
// bounds how long that reader waits; one whose deadline passes gets the
// last good value when there is one, else ErrUnavailable.
//
// Backend health is kept per provider, not per key. The first call that
// finds a provider unavailable marks it down: from then on every cached
// value and listing of that provider is served stale at once, and one
// background probe, with exponential back-off, repeats that call until the
// provider answers. Any answer (a value, not found, denied) marks the
// provider up again. Only the reader who discovers an outage waits.
//
// What is kept, by kind of answer (see resolver.KindOf):
//
//   - a value: fresh for TTL; replaces whatever was there.
//   - not found, permission denied: a real answer about the secret, kept for
//     NegativeTTL; it replaces a value (a deleted or revoked secret is not
//     served stale). Negative answers live in their own bounded store and
//     never evict a value, so a flood of missing names cannot flush the
//     cache.
//   - unavailable, unknown: says nothing about the secret, so a good value
//     is kept and served stale. A failed listing with nothing to serve is
//     remembered for ErrorTTL, so that it does not fail every lookup.
//
// When a key's value changes (a new version, another value, a deletion) the
// Cache updates its state first and then calls the functions given to
// OnChange, so the filesystem can tell the kernel. Values never appear in
// logs, errors or counters.
package cache

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
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
	DefaultJitter      = 0.1
	DefaultErrorTTL    = 5 * time.Second
	DefaultProbeMin    = time.Second
	DefaultProbeMax    = 30 * time.Second
)

// Source is what the Cache needs of resolver.Resolver.
type Source interface {
	// Fetch reads the whole value of ref (ref.Field is ignored).
	Fetch(ctx context.Context, ref resolver.Reference) (resolver.Secret, error)
	List(ctx context.Context, provider, dir string) ([]string, error)
	Probe(ctx context.Context, provider, dir string) ([]string, bool, error)
	GetBatch(ctx context.Context, provider string, keys []string) (map[string]resolver.Secret, error)
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
	// MaxEntries bounds the values and listings held; MaxNegative the
	// not-found and denied answers (default: MaxEntries), apart.
	MaxEntries  int
	MaxNegative int
	Jitter      float64 // fraction of the TTL, 0..1
	// Timeout is the budget of one backend call (resolver.DefaultTimeout).
	Timeout time.Duration
	// ErrorTTL is how long a failed listing with nothing to serve is
	// remembered.
	ErrorTTL time.Duration
	// ProbeMin and ProbeMax bound the back-off of the probe that finds out
	// when a provider that is down is back.
	ProbeMin, ProbeMax time.Duration
	Clock              Clock
	// Observer, when set, is told of every backend call and every stale
	// value served (metrics). It must not block.
	Observer Observer
	// Rand returns a number in [0,1) for jitter; tests may fix it.
	Rand   func() float64
	Logger *slog.Logger
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
	// served stale.
	FreshFor time.Duration
}

// Cache is the engine. It is safe for concurrent use.
type Cache struct {
	src   Source
	opts  Options
	log   *slog.Logger
	group singleflight.Group
	// ctx ends with Close; backend calls and probes run under it.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	entries   map[key]*entry     // guarded by mu
	values    *list.List         // guarded by mu; *entry holding a value or listing, most recently used first
	negatives *list.List         // guarded by mu; *entry holding a negative answer or a failed listing
	health    map[string]*health // guarded by mu; by provider
	cannot    map[key]bool       // guarded by mu; what a provider said it cannot do at all (ErrUnsupported): list or probe that directory
	onChange  []func(Change)     // guarded by mu
	times     times              // guarded by mu; starts as opts' and changes with SetTimes

	hits, misses, stale, calls, refreshes, throttled atomic.Uint64

	bgMu   sync.Mutex
	bgIdle sync.Cond // on bgMu; broadcast when bgN drops to zero
	bgN    int       // guarded by bgMu; background tasks running
	closed bool      // guarded by bgMu; no new background tasks
}

type op uint8

const (
	opGet op = iota
	opList
	opProbe
)

type key struct {
	op       op
	provider string
	name     string // key for opGet, directory for opList
	version  string
}

func (k key) ref() resolver.Reference {
	return resolver.Reference{Provider: k.provider, Key: k.name, Version: k.version}
}

func (k key) String() string {
	switch k.op {
	case opList:
		return "list " + k.provider + ":" + k.name + "/"
	case opProbe:
		return "probe " + k.provider + ":" + k.name + "/"
	}
	return k.ref().String()
}

func (k key) flight() string {
	return string(rune('0'+k.op)) + "\x00" + k.provider + "\x00" + k.name + "\x00" + k.version
}

// times are the durations a reload may change.
type times struct{ ttl, negativeTTL, maxStale time.Duration }

// entry is one cached answer. Once in the store, its fields are guarded by
// Cache.mu.
type entry struct {
	key        key
	val        any   // resolver.Secret or *Listing; nil for a negative answer
	err        error // the negative answer or the remembered failure
	fetched    time.Time
	expires    time.Time
	refreshAt  time.Time // from then on a read starts a refresh ahead
	staleUntil time.Time // last instant the value may be served stale; zero: never
	used       bool      // read since it was fetched
	refreshing bool      // a refresh ahead is under way
	timer      Timer     // the refresh-ahead timer, if any
	el         *list.Element
}

func (e *entry) negative() bool { return e.val == nil }

// servableStale reports whether e holds a good value that may still be
// served past its expiry at now.
func (e *entry) servableStale(now time.Time) bool {
	return !e.negative() && !e.staleUntil.IsZero() && !now.After(e.staleUntil)
}

// health is what is known of one provider.
type health struct {
	gen     uint64 // counts outages, so that a probe of an old one stops
	lastErr string // the kind of the last failure (Result), never its text
	down    bool
	since   time.Time
	backoff time.Duration
	probe   func(context.Context) error // repeats the call that found the outage
	timer   Timer
}

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
	if opts.MaxNegative <= 0 {
		opts.MaxNegative = opts.MaxEntries
	}
	if opts.Jitter <= 0 || opts.Jitter > 1 {
		opts.Jitter = DefaultJitter
	}
	if opts.Timeout <= 0 {
		opts.Timeout = resolver.DefaultTimeout
	}
	if opts.ErrorTTL <= 0 {
		opts.ErrorTTL = DefaultErrorTTL
	}
	if opts.ProbeMin <= 0 {
		opts.ProbeMin = DefaultProbeMin
	}
	if opts.ProbeMax < opts.ProbeMin {
		opts.ProbeMax = max(DefaultProbeMax, opts.ProbeMin)
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
		entries: make(map[key]*entry), values: list.New(), negatives: list.New(),
		health: make(map[string]*health), cannot: make(map[key]bool),
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

// Close stops refreshes and probes, ends the backend calls under way and
// waits for them.
func (c *Cache) Close() {
	c.bgMu.Lock()
	c.closed = true
	c.bgMu.Unlock()
	c.cancel()
	c.mu.Lock()
	for _, e := range c.entries {
		if e.timer != nil {
			e.timer.Stop()
		}
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
// it), so that the next read asks the backend; the kernel is told of the
// values through OnChange. A reload that changes what a provider shows
// calls it, and so does a refresh on request.
func (c *Cache) Forget(provider, dir string) {
	var changes []Change
	c.mu.Lock()
	for k, e := range c.entries {
		if k.provider != provider || dir != "" && k.name != dir && !strings.HasPrefix(k.name, dir+"/") {
			continue
		}
		if k.op == opGet && !e.negative() {
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
// answers held.
func (c *Cache) Len() (values, negatives int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.values.Len(), c.negatives.Len()
}

// Health is what is known of one provider.
type Health struct {
	Provider string
	Up       bool
	LastErr  string    // the kind of its last failure (see Result); "" if none
	Since    time.Time // when it went down, while it is
}

// Health returns what is known of each provider that has failed once.
func (c *Cache) Health() map[string]Health {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Health, len(c.health))
	for p, h := range c.health {
		hh := Health{Provider: p, Up: !h.down, LastErr: h.lastErr}
		if h.down {
			hh.Since = h.since
		}
		out[p] = hh
	}
	return out
}

// Down reports whether provider is marked down.
func (c *Cache) Down(provider string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.health[provider]
	return h != nil && h.down
}

// Get returns ref's value, cut to ref.Field. ctx bounds only this reader's
// wait.
func (c *Cache) Get(ctx context.Context, ref resolver.Reference) (Value, error) {
	if err := ref.Validate(); err != nil {
		return Value{}, err
	}
	val, freshFor, err := c.get(ctx, key{op: opGet, provider: ref.Provider, name: ref.Key, version: ref.Version})
	if err != nil {
		return Value{}, err
	}
	s, err := resolver.Cut(ref, val.(resolver.Secret))
	if err != nil {
		return Value{}, err
	}
	return Value{Secret: s, FreshFor: freshFor}, nil
}

// List returns the listing of dir in provider (see resolver.Lister) and how
// long it stays fresh.
func (c *Cache) List(ctx context.Context, provider, dir string) (*Listing, time.Duration, error) {
	val, freshFor, err := c.get(ctx, key{op: opList, provider: provider, name: dir})
	if err != nil {
		return nil, 0, err
	}
	return val.(*Listing), freshFor, nil
}

// Probe returns what one small request finds below dir in provider (see
// resolver.Prober): a Listing that may not be Complete.
func (c *Cache) Probe(ctx context.Context, provider, dir string) (*Listing, time.Duration, error) {
	val, freshFor, err := c.get(ctx, key{op: opProbe, provider: provider, name: dir})
	if err != nil {
		return nil, 0, err
	}
	return val.(*Listing), freshFor, nil
}

// fetch asks the source for k, under ctx.
func (c *Cache) fetch(ctx context.Context, k key) (any, error) {
	switch k.op {
	case opList:
		names, err := c.src.List(ctx, k.provider, k.name)
		if err != nil {
			return nil, err
		}
		return NewListing(names), nil
	case opProbe:
		names, complete, err := c.src.Probe(ctx, k.provider, k.name)
		if err != nil {
			return nil, err
		}
		if complete {
			return NewListing(names), nil
		}
		return NewPartialListing(names), nil
	}
	return c.src.Fetch(ctx, k.ref())
}

// Prefetch reads the current values of keys in provider that are not fresh
// in memory, in a batch where the provider can (resolver.BatchGetter), and
// stores them as if each had been read alone. It does nothing for a
// provider that cannot batch. ctx bounds the wait; the call has its budget.
func (c *Cache) Prefetch(ctx context.Context, provider string, keys []string) error {
	now := c.opts.Clock.Now()
	var missing []string
	c.mu.Lock()
	for _, name := range keys {
		e := c.entries[key{op: opGet, provider: provider, name: name}]
		if e == nil || !now.Before(e.expires) {
			missing = append(missing, name)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	done := make(chan error, 1)
	started := c.background(func() {
		callCtx, cancel := context.WithTimeout(c.ctx, c.opts.Timeout)
		defer cancel()
		start := time.Now()
		got, err := c.src.GetBatch(callCtx, provider, missing)
		if !errors.Is(err, errors.ErrUnsupported) {
			c.calls.Add(1)
			c.opts.Observer.BackendCall(provider, Result(err), time.Since(start))
		}
		for name, s := range got {
			c.storeValue(key{op: opGet, provider: provider, name: name}, s)
		}
		done <- err
	})
	if !started {
		return nil // closed: nothing to read ahead for
	}
	select {
	case err := <-done:
		if errors.Is(err, errors.ErrUnsupported) {
			return nil
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// get serves k from memory or through one shared call of fetch.
func (c *Cache) get(ctx context.Context, k key) (any, time.Duration, error) {
	now := c.opts.Clock.Now()
	c.mu.Lock()
	if c.cannot[k] {
		c.mu.Unlock()
		return nil, 0, fmt.Errorf("%s: %w", k, errors.ErrUnsupported)
	}
	if e, ok := c.entries[k]; ok {
		switch {
		case now.Before(e.expires):
			c.touch(e)
			e.used = true
			refresh := !e.negative() && !now.Before(e.refreshAt) && c.startRefresh(e)
			val, err, freshFor := e.val, e.err, e.expires.Sub(now)
			c.mu.Unlock()
			c.hits.Add(1)
			if refresh {
				c.refresh(k)
			}
			if err != nil {
				return nil, 0, err
			}
			return val, freshFor, nil
		case e.servableStale(now) && c.isDown(k.provider):
			// The provider is known to be down: serve the last good value
			// at once; its probe finds out when it is back.
			c.touch(e)
			val, past := e.val, now.Sub(e.expires)
			c.mu.Unlock()
			c.stale.Add(1)
			c.opts.Observer.StaleServed(k.provider, past)
			return val, 0, nil
		}
	}
	c.mu.Unlock()
	c.misses.Add(1)

	select {
	case res := <-c.flight(k, false):
		if res.Err != nil {
			return nil, 0, res.Err
		}
		r := res.Val.(result)
		return r.val, r.freshFor, nil
	case <-ctx.Done():
		// Out of time: a value that may be served stale beats an error.
		if val, ok := c.staleValue(k); ok && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			c.stale.Add(1)
			c.opts.Observer.StaleServed(k.provider, 0)
			c.log.Warn("backend did not answer in time; serving the last good value", "secret", k.String())
			return val, 0, nil
		}
		return nil, 0, resolver.Unavailable(fmt.Errorf("%s: waiting for backend: %w", k, ctx.Err()))
	}
}

// result is what a flight hands its readers.
type result struct {
	val      any
	freshFor time.Duration
}

// flight starts (or joins) the one backend call for k. The call runs under
// its own budget; no reader's cancellation or deadline reaches it. A
// refresh (force) asks the backend even though the entry is fresh.
func (c *Cache) flight(k key, force bool) <-chan singleflight.Result {
	name := k.flight()
	if force {
		name += "\x00refresh"
	}
	return c.group.DoChan(name, func() (any, error) {
		if !force {
			// A flight that ended just before this one began may have
			// stored a fresh answer already.
			if val, freshFor, err, ok := c.fresh(k); ok {
				if err != nil {
					return nil, err
				}
				return result{val, freshFor}, nil
			}
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.Timeout)
		defer cancel()
		return c.fill(ctx, k)
	})
}

// refresh fetches k again in the background, ahead of its expiry.
func (c *Cache) refresh(k key) {
	c.refreshes.Add(1)
	c.background(func() {
		<-c.flight(k, true)
		c.mu.Lock()
		if e, ok := c.entries[k]; ok {
			e.refreshing = false
			// A refresh that stored nothing new is not tried again at
			// once by every read that follows.
			if now := c.opts.Clock.Now(); !now.Before(e.refreshAt) {
				e.refreshAt = now.Add(c.opts.ProbeMin)
			}
		}
		c.mu.Unlock()
	})
}

// startRefresh marks e as being refreshed unless it is already, or its
// provider is down (the probe comes first). Called with mu held.
func (c *Cache) startRefresh(e *entry) bool {
	if e.refreshing || c.isDown(e.key.provider) {
		return false
	}
	e.refreshing = true
	return true
}

// staleValue returns k's last good value if it may still be served stale.
func (c *Cache) staleValue(k key) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok && e.servableStale(c.opts.Clock.Now()) {
		return e.val, true
	}
	return nil, false
}

// fresh returns k's answer if it is in memory and not expired.
func (c *Cache) fresh(k key) (val any, freshFor time.Duration, err error, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Clock.Now()
	if e, found := c.entries[k]; found && now.Before(e.expires) {
		return e.val, e.expires.Sub(now), e.err, true
	}
	return nil, 0, nil, false
}

// fill calls the backend once and decides, by the kind of answer, what is
// kept and what the readers get.
func (c *Cache) fill(ctx context.Context, k key) (any, error) {
	c.calls.Add(1)
	c.log.Debug("backend call", "op", k.String())
	start := time.Now()
	val, err := c.fetch(ctx, k)
	if resolver.KindOf(err) != resolver.KindUnsupported {
		c.opts.Observer.BackendCall(k.provider, Result(err), time.Since(start))
	}
	now := c.opts.Clock.Now()
	if errors.Is(err, resolver.ErrThrottled) {
		c.throttled.Add(1)
	}

	switch kind := resolver.KindOf(err); kind {
	case resolver.KindOK:
		c.markUp(k.provider)
		freshFor := c.storeValue(k, val)
		return result{val, freshFor}, nil

	case resolver.KindNotFound, resolver.KindPermission:
		c.markUp(k.provider)
		c.mu.Lock()
		negativeTTL := c.times.negativeTTL
		c.mu.Unlock()
		c.storeNegative(k, err, negativeTTL)
		return nil, err

	case resolver.KindUnavailable, resolver.KindUnknown:
		if kind == resolver.KindUnavailable {
			c.markDown(k.provider, err, func(ctx context.Context) error { _, err := c.fetch(ctx, k); return err })
		} else {
			c.log.Error("unexpected backend error; keeping what is cached", "op", k.String(), "error", err)
		}
		c.mu.Lock()
		e, ok := c.entries[k]
		if ok && !e.negative() && now.Before(e.expires) {
			// A refresh ahead failed: what is held is still fresh.
			val, freshFor := e.val, e.expires.Sub(now)
			c.mu.Unlock()
			return result{val, freshFor}, nil
		}
		stale := ok && e.servableStale(now)
		var expiredFor time.Duration
		if stale {
			val, expiredFor = e.val, now.Sub(e.expires)
		}
		c.mu.Unlock()
		if stale {
			c.stale.Add(1)
			c.opts.Observer.StaleServed(k.provider, max(expiredFor, 0))
			c.log.Warn("backend unavailable; serving the last good value",
				"secret", k.String(), "expired_for", max(expiredFor, 0).Round(time.Millisecond), "error", err)
			return result{val, 0}, nil
		}
		if k.op != opGet {
			c.storeNegative(k, err, c.opts.ErrorTTL)
		}
		return nil, err

	case resolver.KindUnsupported:
		// The provider cannot do this at all (list, probe): remember it,
		// and it was no backend call.
		c.calls.Add(^uint64(0))
		c.mu.Lock()
		c.cannot[k] = true
		c.mu.Unlock()
		return nil, err

	default: // invalid, canceled: nothing learned about the key
		return nil, err
	}
}

// storeValue stores a good answer, fresh for the (jittered) TTL, arms its
// refresh ahead and reports a change. It returns how long it is fresh.
func (c *Cache) storeValue(k key, val any) time.Duration {
	c.mu.Lock()
	ttl, staleFor := c.times.ttl, c.times.maxStale
	c.mu.Unlock()
	if s, ok := val.(resolver.Secret); ok && s.MaxAge > 0 {
		// A lease ends the value's life: never keep or serve it past that.
		ttl = min(ttl, s.MaxAge)
		staleFor = 0
	}
	ttl = c.jitter(ttl)
	now := c.opts.Clock.Now()
	e := &entry{key: k, val: val, fetched: now, expires: now.Add(ttl), refreshAt: now.Add(ttl * 3 / 4)}
	if staleFor > 0 {
		e.staleUntil = e.expires.Add(staleFor)
	}
	if c.ctx.Err() == nil { // a call that ends after Close arms nothing
		e.timer = c.opts.Clock.AfterFunc(ttl*3/4, func() { c.refreshDue(e) })
	}

	c.mu.Lock()
	old := c.entries[k]
	changed := k.op == opGet && old != nil && !sameValue(old.val, val)
	c.put(e)
	subs := c.onChange
	c.mu.Unlock()
	if changed {
		c.notify(subs, Change{Ref: k.ref()})
	}
	return ttl
}

// storeNegative stores a negative answer (or a remembered failure) for d.
func (c *Cache) storeNegative(k key, err error, d time.Duration) {
	now := c.opts.Clock.Now()
	e := &entry{key: k, err: err, fetched: now, expires: now.Add(c.jitter(d))}
	c.mu.Lock()
	old := c.entries[k]
	deleted := k.op == opGet && old != nil && !old.negative()
	c.put(e)
	subs := c.onChange
	c.mu.Unlock()
	if deleted {
		c.notify(subs, Change{Ref: k.ref(), Deleted: true})
	}
}

func (c *Cache) notify(subs []func(Change), ch Change) {
	for _, f := range subs {
		f(ch)
	}
}

func sameValue(a, b any) bool {
	sa, ok1 := a.(resolver.Secret)
	sb, ok2 := b.(resolver.Secret)
	return ok1 && ok2 && sa.Version == sb.Version && bytes.Equal(sa.Value, sb.Value)
}

// refreshDue runs when three quarters of e's freshness have passed: if e
// was read meanwhile, it is fetched again in the background.
func (c *Cache) refreshDue(e *entry) {
	c.mu.Lock()
	current := c.entries[e.key] == e
	start := current && e.used && c.startRefresh(e)
	c.mu.Unlock()
	if !start {
		return
	}
	c.refresh(e.key)
}

// jitter shortens d by up to Jitter of it.
func (c *Cache) jitter(d time.Duration) time.Duration {
	return d - time.Duration(c.opts.Jitter*c.opts.Rand()*float64(d))
}

// put stores e, replacing the entry for its key, and evicts the least
// recently used entries of its store past the store's bound. Called with mu
// held.
func (c *Cache) put(e *entry) {
	if old, ok := c.entries[e.key]; ok {
		c.drop(old)
	}
	store, limit := c.values, c.opts.MaxEntries
	if e.negative() {
		store, limit = c.negatives, c.opts.MaxNegative
	}
	e.el = store.PushFront(e)
	c.entries[e.key] = e
	for store.Len() > limit {
		c.drop(store.Back().Value.(*entry))
	}
}

// drop removes e from the store. Called with mu held.
func (c *Cache) drop(e *entry) {
	if e.timer != nil {
		e.timer.Stop()
	}
	if e.negative() {
		c.negatives.Remove(e.el)
	} else {
		c.values.Remove(e.el)
	}
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
	}
}

// touch marks e as most recently used. Called with mu held.
func (c *Cache) touch(e *entry) {
	if e.negative() {
		c.negatives.MoveToFront(e.el)
	} else {
		c.values.MoveToFront(e.el)
	}
}

func (c *Cache) isDown(provider string) bool {
	h := c.health[provider]
	return h != nil && h.down
}

// markDown marks provider down, unless it is already, and arms its probe:
// probe repeats the call that found the outage.
func (c *Cache) markDown(provider string, err error, probe func(context.Context) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.health[provider]
	if h == nil {
		h = &health{}
		c.health[provider] = h
	}
	h.lastErr = Result(err)
	if h.down {
		return
	}
	if c.ctx.Err() != nil {
		return // closed
	}
	h.gen++
	h.down, h.since, h.backoff, h.probe = true, c.opts.Clock.Now(), c.opts.ProbeMin, probe
	c.log.Warn("provider unavailable; serving cached values stale until it answers", "provider", provider)
	c.armProbe(provider, h)
}

// armProbe schedules the next probe of the current outage. Called with mu
// held.
func (c *Cache) armProbe(provider string, h *health) {
	gen := h.gen
	h.timer = c.opts.Clock.AfterFunc(h.backoff, func() { c.background(func() { c.runProbe(provider, h, gen) }) })
}

// markUp marks provider up and stops its probe.
func (c *Cache) markUp(provider string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.health[provider]
	if h == nil || !h.down {
		return
	}
	h.down = false
	if h.timer != nil {
		h.timer.Stop()
	}
	c.log.Info("provider answers again", "provider", provider, "down_for", c.opts.Clock.Now().Sub(h.since).Round(time.Millisecond))
}

// runProbe repeats the call that found provider down; while it still
// fails as unavailable, it is tried again after twice the wait.
func (c *Cache) runProbe(provider string, h *health, gen uint64) {
	c.mu.Lock()
	if c.health[provider] != h || !h.down || h.gen != gen || c.ctx.Err() != nil {
		c.mu.Unlock()
		return
	}
	probe := h.probe
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(c.ctx, c.opts.Timeout)
	c.calls.Add(1)
	start := time.Now()
	err := probe(ctx)
	cancel()
	c.opts.Observer.BackendCall(provider, Result(err), time.Since(start))
	if k := resolver.KindOf(err); k != resolver.KindUnavailable && k != resolver.KindCanceled {
		c.markUp(provider)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !h.down || h.gen != gen || c.ctx.Err() != nil {
		return
	}
	h.backoff = min(2*h.backoff, c.opts.ProbeMax)
	c.armProbe(provider, h)
}

// Listing is one directory's entries as a provider listed them (see
// resolver.Lister): "name" for a secret, "name/" for a directory. It is
// immutable and answers membership without a scan. A probe's listing may be
// partial: then a name it lacks may still exist.
type Listing struct {
	names   []string
	set     map[string]struct{}
	partial bool
}

// Complete reports whether the listing holds every entry of the directory.
func (l *Listing) Complete() bool { return !l.partial }

// NewListing returns the listing of names (duplicates are dropped).
func NewListing(names []string) *Listing {
	l := &Listing{names: slices.Clone(names), set: make(map[string]struct{}, len(names))}
	slices.Sort(l.names)
	l.names = slices.Compact(l.names)
	for _, n := range l.names {
		l.set[n] = struct{}{}
	}
	return l
}

// NewPartialListing returns a listing of names that may lack some of the
// directory's entries (a probe's page).
func NewPartialListing(names []string) *Listing {
	l := NewListing(names)
	l.partial = true
	return l
}

// Names returns the entries, sorted. The caller must not change them.
func (l *Listing) Names() []string { return l.names }

// Has reports whether entry ("name" or "name/") is listed.
func (l *Listing) Has(entry string) bool {
	_, ok := l.set[entry]
	return ok
}
