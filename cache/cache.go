// Package cache keeps secret values in memory in front of providers.
//
// A Cache wraps each resolver.Provider in a decorator of the same shape, so
// the resolver and the filesystem do not know whether they talk to a backend
// or to memory. All wrapped providers share one bounded store (least recently
// used entries go first) and one set of counters.
//
// The life of an entry:
//
//   - fresh: for TTL after it was fetched (TTL minus up to Jitter of it, so
//     that keys fetched together do not expire together; shorter when the
//     backend says the value must not live longer, e.g. a Vault lease). Reads
//     are served from memory.
//   - expired: the next read asks the backend again. Concurrent reads of one
//     key share that one call (singleflight); a reader whose context ends
//     stops waiting, while the call goes on for the others under its own
//     deadline.
//   - stale: when that refresh fails with resolver.ErrUnavailable (or does
//     not answer before the reader's deadline), the last good value is
//     served for up to MaxStale past its expiry and the failure is logged.
//     From then on readers get the stale value at once, and the backend is
//     asked again in the background every ErrorBackoff until it answers, so
//     that no reader waits out a timeout on a backend known to be down.
//
// Not-found and permission-denied answers are cached too, for NegativeTTL,
// and they replace a cached value: a value the backend now refuses is not
// served stale. Other errors are not cached, and drop the entry.
//
// The value is cached once per (provider, key, version); resolver.Resolver
// cuts #FIELD from it, so every field of one secret costs one backend call.
package cache

import (
	"container/list"
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

// Defaults for Options fields left zero.
const (
	DefaultTTL          = 5 * time.Minute
	DefaultNegativeTTL  = 30 * time.Second
	DefaultMaxStale     = time.Hour
	DefaultMaxEntries   = 10000
	DefaultJitter       = 0.1
	DefaultErrorBackoff = 5 * time.Second
)

// Options configures a Cache. Zero fields take the defaults above, except
// MaxStale, where a negative value means "never serve stale" (the CLI maps
// --max-stale=0 to that).
type Options struct {
	TTL          time.Duration
	NegativeTTL  time.Duration
	MaxStale     time.Duration
	MaxEntries   int
	Jitter       float64       // fraction of the TTL, 0..1
	ErrorBackoff time.Duration // how long a failed refresh is not retried
	// Now is the clock; tests inject a fake one so they never sleep.
	Now func() time.Time
	// Rand returns a number in [0,1) for jitter; tests may fix it.
	Rand   func() float64
	Logger *slog.Logger
}

// Stats counts what the cache did. Values never appear here.
type Stats struct {
	Hits   uint64 // served fresh from memory (including cached not-found)
	Misses uint64 // not fresh in memory: the reader waited for a backend call
	Stale  uint64 // served past expiry because the backend was unavailable
	Calls  uint64 // calls made to providers
}

// Cache is a bounded TTL cache shared by the providers it wraps. It is safe
// for concurrent use.
type Cache struct {
	opts  Options
	group singleflight.Group

	mu      sync.Mutex
	lru     *list.List            // guarded by mu; of *entry, most recently used first
	entries map[key]*list.Element // guarded by mu

	hits, misses, stale, calls atomic.Uint64
}

type op uint8

const (
	opGet op = iota
	opList
)

type key struct {
	op       op
	provider string
	name     string // key for opGet, directory for opList
	version  string
}

func (k key) String() string {
	if k.op == opList {
		return "list " + k.provider + ":" + k.name + "/"
	}
	return resolver.Reference{Provider: k.provider, Key: k.name, Version: k.version}.String()
}

// entry is one cached answer. Its fields are guarded by Cache.mu once the
// entry is in the store.
type entry struct {
	key        key
	val        any   // resolver.Secret or []string
	err        error // non-nil for a cached not-found
	expires    time.Time
	staleUntil time.Time // last instant the value may be served stale
	retryAfter time.Time // while stale: do not ask the backend before this
}

// servableStale reports whether e holds a good value that may still be
// served past its expiry at now.
func (e *entry) servableStale(now time.Time) bool {
	return e.err == nil && !now.After(e.staleUntil)
}

// New returns a Cache with opts, defaults filled in.
func New(opts Options) *Cache {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = DefaultNegativeTTL
	}
	if opts.MaxStale == 0 {
		opts.MaxStale = DefaultMaxStale
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.Jitter <= 0 || opts.Jitter > 1 {
		opts.Jitter = DefaultJitter
	}
	if opts.ErrorBackoff <= 0 {
		opts.ErrorBackoff = DefaultErrorBackoff
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{opts: opts, lru: list.New(), entries: make(map[key]*list.Element)}
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	return Stats{Hits: c.hits.Load(), Misses: c.misses.Load(), Stale: c.stale.Load(), Calls: c.calls.Load()}
}

// Len returns the number of entries held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Wrap returns p behind the cache. The result implements resolver.Lister
// and resolver.BatchGetter exactly when p does.
func (c *Cache) Wrap(p resolver.Provider) resolver.Provider {
	cp := &cachedProvider{c: c, p: p}
	l, isLister := p.(resolver.Lister)
	b, isBatcher := p.(resolver.BatchGetter)
	switch {
	case isLister && isBatcher:
		return &struct {
			*cachedProvider
			*cachedLister
			*cachedBatcher
		}{cp, &cachedLister{cp, l}, &cachedBatcher{cp, b}}
	case isLister:
		return &struct {
			*cachedProvider
			*cachedLister
		}{cp, &cachedLister{cp, l}}
	case isBatcher:
		return &struct {
			*cachedProvider
			*cachedBatcher
		}{cp, &cachedBatcher{cp, b}}
	}
	return cp
}

type cachedProvider struct {
	c *Cache
	p resolver.Provider
}

type cachedLister struct {
	cp *cachedProvider
	l  resolver.Lister
}

type cachedBatcher struct {
	cp *cachedProvider
	b  resolver.BatchGetter
}

func (cp *cachedProvider) Name() string { return cp.p.Name() }

func (cp *cachedProvider) Get(ctx context.Context, k, version string) (resolver.Secret, error) {
	v, err := cp.c.get(ctx, key{op: opGet, provider: cp.p.Name(), name: k, version: version},
		func(ctx context.Context) (any, error) { return cp.p.Get(ctx, k, version) })
	if err != nil {
		return resolver.Secret{}, err
	}
	return v.(resolver.Secret), nil
}

func (cl *cachedLister) List(ctx context.Context, dir string) ([]string, error) {
	v, err := cl.cp.c.get(ctx, key{op: opList, provider: cl.cp.p.Name(), name: dir},
		func(ctx context.Context) (any, error) { return cl.l.List(ctx, dir) })
	if err != nil {
		return nil, err
	}
	return v.([]string), nil
}

// GetBatch asks the backend, in one batch, for the keys that are not fresh
// in memory, and stores what it returns as if each had been read alone.
func (cb *cachedBatcher) GetBatch(ctx context.Context, keys []string) (map[string]resolver.Secret, error) {
	c, name := cb.cp.c, cb.cp.p.Name()
	out := make(map[string]resolver.Secret, len(keys))
	var missing []string
	for _, k := range keys {
		val, err, ok := c.fresh(key{op: opGet, provider: name, name: k})
		switch {
		case !ok:
			missing = append(missing, k)
		case err == nil:
			out[k] = val.(resolver.Secret)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	c.calls.Add(1)
	got, err := cb.b.GetBatch(ctx, missing)
	for k, s := range got {
		c.storeValue(key{op: opGet, provider: name, name: k}, s)
		out[k] = s
	}
	return out, err
}

// get serves k from memory or through one shared call of fetch.
func (c *Cache) get(ctx context.Context, k key, fetch func(context.Context) (any, error)) (any, error) {
	now := c.opts.Now()
	c.mu.Lock()
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*entry)
		switch {
		case now.Before(e.expires):
			c.lru.MoveToFront(el)
			val, err := e.val, e.err
			c.mu.Unlock()
			c.hits.Add(1)
			return val, err
		case !e.retryAfter.IsZero() && e.servableStale(now):
			// The backend failed the last refresh: serve the last good
			// value at once and, once the back-off has passed, try again
			// in the background, so no reader waits on a backend that is
			// known to be down.
			c.lru.MoveToFront(el)
			val := e.val
			retry := !now.Before(e.retryAfter)
			if retry {
				e.retryAfter = now.Add(c.opts.ErrorBackoff)
			}
			c.mu.Unlock()
			c.stale.Add(1)
			if retry {
				c.flight(ctx, k, fetch)
			}
			return val, nil
		}
	}
	c.mu.Unlock()
	c.misses.Add(1)

	select {
	case res := <-c.flight(ctx, k, fetch):
		return res.Val, res.Err
	case <-ctx.Done():
		// Out of time: a value that may be served stale beats an error.
		if val, ok := c.staleValue(k); ok && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			c.stale.Add(1)
			c.opts.Logger.Warn("backend did not answer in time; serving the last good value", "secret", k.String())
			return val, nil
		}
		return nil, resolver.Unavailable(fmt.Errorf("%s: waiting for backend: %w", k, ctx.Err()))
	}
}

// flight starts (or joins) the one backend call for k. The call does not
// die with the first reader's cancellation, but it keeps that reader's
// deadline (the resolver always sets one).
func (c *Cache) flight(ctx context.Context, k key, fetch func(context.Context) (any, error)) <-chan singleflight.Result {
	return c.group.DoChan(string(rune(k.op))+"\x00"+k.provider+"\x00"+k.name+"\x00"+k.version, func() (any, error) {
		deadline, ok := ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(resolver.DefaultTimeout)
		}
		callCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		defer cancel()
		// A flight that ended just before this one began may have stored
		// a fresh answer already.
		if val, err, ok := c.fresh(k); ok {
			return val, err
		}
		return c.fill(callCtx, k, fetch)
	})
}

// staleValue returns k's last good value if it may still be served stale.
func (c *Cache) staleValue(k key) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		if e := el.Value.(*entry); e.servableStale(c.opts.Now()) {
			return e.val, true
		}
	}
	return nil, false
}

// fresh returns k's answer if it is in memory and not expired.
func (c *Cache) fresh(k key) (val any, err error, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, found := c.entries[k]; found {
		if e := el.Value.(*entry); c.opts.Now().Before(e.expires) {
			return e.val, e.err, true
		}
	}
	return nil, nil, false
}

// fill calls the backend once and stores what it says.
func (c *Cache) fill(ctx context.Context, k key, fetch func(context.Context) (any, error)) (any, error) {
	c.calls.Add(1)
	val, err := fetch(ctx)
	err = resolver.Unavailable(err)
	now := c.opts.Now()

	switch {
	case err == nil:
		c.storeValue(k, val)
		return val, nil

	case errors.Is(err, resolver.ErrNotFound), errors.Is(err, resolver.ErrPermission):
		c.store(&entry{key: k, err: err, expires: now.Add(c.jitter(c.opts.NegativeTTL))})
		return nil, err

	case errors.Is(err, resolver.ErrUnavailable):
		var (
			val        any
			expiredFor time.Duration
			stale      bool
		)
		c.mu.Lock()
		if el, ok := c.entries[k]; ok {
			e := el.Value.(*entry)
			if e.servableStale(now) {
				e.retryAfter = now.Add(c.opts.ErrorBackoff)
				val, expiredFor, stale = e.val, now.Sub(e.expires), true
			}
		}
		c.mu.Unlock()
		if !stale {
			return nil, err
		}
		c.stale.Add(1)
		c.opts.Logger.Warn("backend unavailable; serving the last good value",
			"secret", k.String(), "expired_for", expiredFor.Round(time.Millisecond), "error", err)
		return val, nil

	default:
		c.remove(k)
		return nil, err
	}
}

// storeValue stores a good answer, fresh for the (jittered) TTL.
func (c *Cache) storeValue(k key, val any) {
	ttl := c.opts.TTL
	staleFor := c.opts.MaxStale
	if s, ok := val.(resolver.Secret); ok && s.MaxAge > 0 {
		// A lease ends the value's life: never keep or serve it past that.
		ttl = min(ttl, s.MaxAge)
		staleFor = -1
	}
	exp := c.opts.Now().Add(c.jitter(ttl))
	c.store(&entry{key: k, val: val, expires: exp, staleUntil: staleUntilOf(exp, staleFor)})
}

func staleUntilOf(expires time.Time, staleFor time.Duration) time.Time {
	if staleFor < 0 {
		return time.Time{} // never
	}
	return expires.Add(staleFor)
}

// jitter shortens d by up to Jitter of it.
func (c *Cache) jitter(d time.Duration) time.Duration {
	return d - time.Duration(c.opts.Jitter*c.opts.Rand()*float64(d))
}

func (c *Cache) store(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[e.key]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[e.key] = c.lru.PushFront(e)
	for c.lru.Len() > c.opts.MaxEntries {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*entry).key)
	}
}

func (c *Cache) remove(k key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		c.lru.Remove(el)
		delete(c.entries, k)
	}
}
