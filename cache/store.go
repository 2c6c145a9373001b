package cache

// The stores: what the Cache holds, each kind in its own bounded LRU, so
// that no sequence of lookups grows memory past the bounds and no kind of
// answer evicts another.
//
//   - values: secret values (MaxEntries).
//   - listings: non-empty listings of directories (MaxListings).
//   - negatives: not-found and denied answers, what a provider cannot do
//     for one directory, remembered failures, and the empty listing of a
//     directory below the top (what a missing name lists as)
//     (MaxNegative).
//
// Every entry carries the generation of the call that produced it (see
// flight.go): an older call's answer never replaces a newer one.

import (
	"bytes"
	"container/list"
	"errors"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

type op uint8

const (
	opGet op = iota
	opList
	opProbe
)

// key names one answer: a value (opGet) or a directory's listing or probe.
type key struct {
	op       op
	provider string
	name     string // key for opGet, directory for opList and opProbe
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

// under reports whether k is at or below dir of provider ("" for all).
func (k key) under(provider, dir string) bool {
	if k.provider != provider {
		return false
	}
	return dir == "" || k.name == dir || len(k.name) > len(dir) && k.name[len(dir)] == '/' && k.name[:len(dir)] == dir
}

// entry is one cached answer. Once in a store, its fields are guarded by
// Cache.mu.
type entry struct {
	key key
	gen uint64 // the generation of the call whose answer this is
	// val is the good answer: a resolver.Secret or a *Listing; nil for a
	// negative answer or a remembered failure.
	val any
	// err is the negative answer, or the failure remembered; with a val,
	// the last failure of this key (its value is kept).
	err        error
	fetched    time.Time // when the call that produced val began
	expires    time.Time
	refreshAt  time.Time // from then on a read starts a refresh ahead
	staleUntil time.Time // last instant val may be served stale; zero: never
	// failures counts this key's failed calls in a row (a failure of the
	// key, not of its provider); retryAt is when the next may be made.
	failures   int
	retryAt    time.Time
	epoch      uint64 // the provider's epoch (see health) at the last failure
	used       bool   // read since it was fetched
	refreshing bool   // a background call (refresh ahead or retry) is under way
	timer      Timer  // the refresh-ahead timer, if any
	store      *store
	el         *list.Element
	bytes      int // what size said when it was stored
	// lease is val's lease, as last renewed (see lease.go); nil for a
	// value that has none.
	lease         *resolver.Lease
	lastRead      time.Time // the last read of the key (a lease is kept only while it is read)
	renewing      bool      // a renewal is under way
	renewFailures int       // renewals failed in a row
	renewTimer    Timer     // the renewal timer, if any
	// cuts are the fields cut from val, each copied into locked memory
	// once (with a Locker), by name: a field read again takes no new copy.
	cuts map[string]resolver.Secret
}

// stopTimers stops e's refresh-ahead and renewal timers. Called with mu
// held.
func (e *entry) stopTimers() {
	if e.timer != nil {
		e.timer.Stop()
	}
	if e.renewTimer != nil {
		e.renewTimer.Stop()
	}
}

// servableStale reports whether e holds a good value that may still be
// served past its expiry at now.
func (e *entry) servableStale(now time.Time) bool {
	return e.val != nil && !e.staleUntil.IsZero() && !now.After(e.staleUntil)
}

// store is one LRU of entries, bounded in count and, where byteLimit is
// set, in the bytes its entries' names and errors take (names a caller
// chooses may be long).
type store struct {
	limit     int
	byteLimit int
	bytes     int
	lru       *list.List // *entry, most recently used first
}

func newStore(limit, byteLimit int) *store {
	return &store{limit: limit, byteLimit: byteLimit, lru: list.New()}
}

// entryOverhead is about what an entry costs besides its names and error.
const entryOverhead = 256

// size is about what e takes in memory, besides a value or listing.
func (e *entry) size() int {
	n := entryOverhead + len(e.key.provider) + len(e.key.name) + len(e.key.version)
	if e.err != nil {
		n += len(e.err.Error())
	}
	return n
}

// storeFor is the store an entry belongs in. Called with mu held.
func (c *Cache) storeFor(e *entry) *store {
	switch v := e.val.(type) {
	case nil:
		return c.negatives
	case *Listing:
		if len(v.names) == 0 && e.key.name != "" {
			return c.negatives // what a name that does not exist lists as
		}
		return c.listings
	}
	return c.values
}

// put stores e, replacing the entry for its key, and evicts the least
// recently used entries of its store past the store's bound. Called with mu
// held.
func (c *Cache) put(e *entry) {
	if old, ok := c.entries[e.key]; ok {
		c.drop(old)
	}
	s := c.storeFor(e)
	e.store, e.el, e.bytes = s, s.lru.PushFront(e), e.size()
	s.bytes += e.bytes
	c.entries[e.key] = e
	for s.lru.Len() > s.limit || s.byteLimit > 0 && s.bytes > s.byteLimit && s.lru.Len() > 1 {
		// A held key (a watched file, an on-change entry's) is not evicted:
		// nobody reads it, and its change must still be heard. Holds are
		// bounded by what the kernel and the configuration hold.
		victim := s.lru.Back()
		for victim != nil && c.holds[victim.Value.(*entry).key] > 0 {
			victim = victim.Prev()
		}
		if victim == nil {
			break
		}
		c.drop(victim.Value.(*entry))
	}
}

// askAgainIfHeld arms e's timer to ask for its key again at at (at the
// soonest ProbeMin from now) while the key is held and e is its entry: a
// held key whose answer is not a value (not found, a failure) is asked
// again as a value is refreshed, so that its coming back is heard. Called
// with mu held.
func (c *Cache) askAgainIfHeld(e *entry, at, now time.Time) {
	if e.key.op != opGet || c.holds[e.key] == 0 || c.ctx.Err() != nil {
		return
	}
	if e.timer != nil {
		e.timer.Stop()
	}
	e.timer = c.opts.Clock.AfterFunc(max(at.Sub(now), c.opts.ProbeMin), func() {
		c.mu.Lock()
		again := c.entries[e.key] == e && c.holds[e.key] > 0
		c.mu.Unlock()
		if again {
			c.refresh(e.key)
		}
	})
}

// drop removes e. Called with mu held.
func (c *Cache) drop(e *entry) {
	e.stopTimers()
	e.store.lru.Remove(e.el)
	e.store.bytes -= e.bytes
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
	}
}

// touch marks e as most recently used. Called with mu held.
func (c *Cache) touch(e *entry) { e.store.lru.MoveToFront(e.el) }

// errSuperseded: a call's answer is older than one held, which may no
// longer be served; the reader asks again (see read).
var errSuperseded = errors.New("superseded by a newer answer")

// older reports whether the answer own of the call of generation gen for
// k is older than what is held, or than a Forget or Expire of its
// provider; it is then not stored, and its readers get what is held, or
// own where nothing newer may be served. Called with mu held.
func (c *Cache) older(k key, gen uint64, now time.Time, own answer) (answer, bool) {
	e, ok := c.entries[k]
	switch {
	case ok && e.gen > gen:
		if a := c.held(e, now); a.val != nil || a.err != nil {
			return a, true
		}
		// What is held is newer but too old to serve, and this answer is
		// older still: a reader that joined this call late (after the newer
		// one was served) would see a rotation go back. Its readers ask
		// again.
		return answer{err: errSuperseded}, true
	case gen < c.floor[k.provider]:
		return own, true
	}
	return answer{}, false
}

// storeValue stores a good answer of the call of generation gen that began
// at began: fresh for the (jittered) TTL from then, with its refresh ahead
// armed, and reports a change. It returns the answer readers get: this
// one, or a newer one already held.
func (c *Cache) storeValue(k key, val any, gen uint64, began time.Time) answer {
	c.mu.Lock()
	ttl, staleFor := c.times.ttl, c.times.maxStale
	c.mu.Unlock()
	if s, ok := val.(resolver.Secret); ok && s.MaxAge > 0 {
		// A lease ends the value's life: never keep or serve it past that.
		ttl = min(ttl, s.MaxAge)
		staleFor = 0
	}
	ttl = c.jitter(ttl)
	e := &entry{key: k, gen: gen, val: val, fetched: began, expires: began.Add(ttl), refreshAt: began.Add(ttl * 3 / 4), lastRead: began}
	if staleFor > 0 {
		e.staleUntil = e.expires.Add(staleFor)
	}
	if e.lease = leaseOf(val); e.lease != nil {
		c.leaseTimes(e) // the lease's times, not the TTL's
	}
	boundByNotAfter(e)
	now := c.opts.Clock.Now()

	// Forgotten or expired on request since the call began, its answer is
	// still served to its readers, not kept.
	own := answer{val: val, gen: gen, freshFor: max(e.expires.Sub(now), 0)}

	c.mu.Lock()
	if held, ok := c.entries[k]; ok && gen < c.floor[k.provider] && held.val != nil && held.gen < gen && !now.Before(held.expires) && staleFor > 0 {
		// Began before an Expire, which kept an older value, expired: this
		// one is not kept fresh either, but it is the last good value now,
		// so that no read served stale goes back behind what this call's
		// readers got.
		held.val, held.gen, held.fetched = val, gen, began
		boundByNotAfter(held)
	}
	if a, ok := c.older(k, gen, now, own); ok {
		c.mu.Unlock()
		return a
	}
	old := c.entries[k]
	if old != nil {
		e.lastRead = old.lastRead // a refresh is no read; a reader's read set it
	}
	switch {
	case c.ctx.Err() != nil || !now.Before(e.expires): // a call that ends after Close arms nothing
	case e.lease != nil:
		c.armLease(e, now)
	default:
		e.timer = c.opts.Clock.AfterFunc(e.refreshAt.Sub(now), func() { c.refreshDue(e) })
	}
	changed := k.op == opGet && old != nil && (old.val == nil || !sameValue(old.val, val))
	if changed && old.lease != nil && e.lease != nil {
		if o, ok := c.opts.Observer.(LeaseObserver); ok {
			o.LeaseReplaced(k.provider)
		}
	}
	if k.op == opGet {
		c.noteWitness(k)
	}
	c.put(e)
	subs := c.onChange
	c.mu.Unlock()
	if changed {
		c.notify(subs, Change{Ref: k.ref()})
	}
	return own
}

// boundByNotAfter keeps e's value neither fresh nor stale past its
// NotAfter, whatever set its times (the TTL, MaxStale, a lease); called
// wherever they are set.
func boundByNotAfter(e *entry) {
	s, ok := e.val.(resolver.Secret)
	if !ok || s.NotAfter.IsZero() {
		return
	}
	if s.NotAfter.Before(e.expires) {
		e.expires = s.NotAfter
		if e.refreshAt.After(e.expires) || e.refreshAt.IsZero() {
			e.refreshAt = e.fetched.Add(e.expires.Sub(e.fetched) * 3 / 4)
		}
	}
	if !e.staleUntil.IsZero() && s.NotAfter.Before(e.staleUntil) {
		e.staleUntil = s.NotAfter
	}
}

// storeNegative stores a negative answer (not found, denied, cannot) of the
// call of generation gen for d, and reports the deletion of a value.
func (c *Cache) storeNegative(k key, err error, d time.Duration, gen uint64, began time.Time) answer {
	e := &entry{key: k, gen: gen, err: err, fetched: began, expires: began.Add(c.jitter(d))}
	now := c.opts.Clock.Now()
	c.mu.Lock()
	if a, ok := c.older(k, gen, now, answer{err: err}); ok {
		c.mu.Unlock()
		return a
	}
	old := c.entries[k]
	deleted := k.op == opGet && old != nil && old.val != nil
	c.put(e)
	c.askAgainIfHeld(e, e.expires, now)
	subs := c.onChange
	c.mu.Unlock()
	if deleted {
		c.notify(subs, Change{Ref: k.ref(), Deleted: true})
	}
	return answer{err: err}
}

// storeFailure remembers that the call of generation gen for k failed (it
// is unavailable or unknown) while its provider answers: the key backs off
// on its own, and keeps its value. It returns what readers get: the value
// while fresh or servable stale, else err.
func (c *Cache) storeFailure(k key, err error, gen uint64) answer {
	now := c.opts.Clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.older(k, gen, now, answer{err: err}); ok {
		return a
	}
	epoch := c.healthOf(k.provider).epoch
	e := c.entries[k]
	if e != nil && e.val != nil {
		if e.epoch != epoch {
			e.failures = 0 // its failures came before the last outage ended
		}
		e.err, e.failures, e.epoch = err, e.failures+1, epoch
		e.store.bytes -= e.bytes
		e.bytes = e.size()
		e.store.bytes += e.bytes
		e.retryAt = now.Add(c.backoff(e.failures))
		e.refreshAt = laterOf(e.refreshAt, e.retryAt)
		return c.lastGood(e, now, err)
	}
	failures := 1
	if e != nil && e.epoch == epoch {
		failures = e.failures + 1 // zero for a negative answer
	}
	wait := c.backoff(failures)
	fe := &entry{key: k, gen: gen, err: err, fetched: now, expires: now.Add(wait), failures: failures, retryAt: now.Add(wait), epoch: epoch}
	c.put(fe)
	c.askAgainIfHeld(fe, fe.retryAt, now)
	return answer{err: err}
}

// lastGood is what readers get of e, which holds a value, when a call for
// it failed with err: the value while fresh, then stale while it may be,
// else err. Called with mu held.
func (c *Cache) lastGood(e *entry, now time.Time, err error) answer {
	switch {
	case now.Before(e.expires):
		return answer{val: e.val, gen: e.gen, freshFor: e.expires.Sub(now)}
	case e.servableStale(now):
		return answer{val: e.val, gen: e.gen, stale: true, past: now.Sub(e.expires), err: err}
	}
	return answer{err: err}
}

// held is the answer e holds now, for the readers of a call whose own
// answer was older. Called with mu held.
func (c *Cache) held(e *entry, now time.Time) answer {
	switch {
	case e.val == nil:
		return answer{err: e.err}
	case now.Before(e.expires):
		return answer{val: e.val, gen: e.gen, freshFor: e.expires.Sub(now)}
	case e.failures > 0 && e.servableStale(now):
		return c.lastGood(e, now, e.err)
	case e.servableStale(now):
		// Newer than the call's own answer, though expired since (a
		// refresh on request): the newest there is, not kept fresh.
		return answer{val: e.val, gen: e.gen}
	}
	return answer{} // too old to serve: nothing
}

// backoff is how long a key waits after its nth failure in a row.
func (c *Cache) backoff(n int) time.Duration {
	d := c.opts.ProbeMin
	for i := 1; i < n && d < c.opts.ProbeMax; i++ {
		d *= 2
	}
	return min(d, c.opts.ProbeMax)
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func sameValue(a, b any) bool {
	sa, ok1 := a.(resolver.Secret)
	sb, ok2 := b.(resolver.Secret)
	return ok1 && ok2 && sa.Version == sb.Version && bytes.Equal(sa.Value, sb.Value)
}

// jitter shortens d by up to Jitter of it.
func (c *Cache) jitter(d time.Duration) time.Duration {
	return d - time.Duration(c.opts.Jitter*c.opts.Rand()*float64(d))
}

func (c *Cache) notify(subs []func(Change), ch Change) {
	for _, f := range subs {
		f(ch)
	}
}
