package cache

// Calls in flight. Every backend call has a generation, taken from one
// counter when it begins; what it stores carries it, and an answer older
// than what is held is never stored (a refresh ahead or a prefetch that
// began before a refresh on request, say). Concurrent readers of one key
// share one call (singleflight); a call runs under its own budget
// (Options.Deadlines) and the Cache's context, never a reader's.
//
// A call's answer is decided by its kind (resolver.KindOf), here:
//
//   - a value: stored fresh; the provider is up.
//   - not found, denied: a real answer about the key, stored as negative
//     for NegativeTTL (it replaces a value); the provider is up.
//   - the provider cannot do this for this directory: a negative too.
//   - unavailable: the provider may be down. A second call that is not
//     about this key confirms it, in the background (health.go); readers
//     with nothing to serve wait for it. Meanwhile, and if it is not
//     confirmed, the failure is this key's: see below.
//   - unknown: logged, and this key's failure.
//   - a key's failure keeps its value (fresh while fresh, then stale up to
//     MaxStale) and backs off on its own: the next call for it is made no
//     sooner than ProbeMin after the first failure, doubling to ProbeMax;
//     until then a read gets the value (or the failure) at once.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/secretfs/secretfs/resolver"
)

// answer is what a call hands its readers.
type answer struct {
	val      any           // nil: err is the answer
	gen      uint64        // the generation of the call val came from
	freshFor time.Duration // how long val stays fresh
	stale    bool          // val is served past its expiry
	past     time.Duration // how far past, when stale
	err      error
	call     error // what the backend said, for Refresh
}

// flight names k's calls in flight. No part holds NUL (resolver.Validate
// refuses it), so names do not collide.
func (k key) flight() string {
	return string(rune('0'+k.op)) + "\x00" + k.provider + "\x00" + k.name + "\x00" + k.version
}

// flight starts (or joins) the call for k. A forced call (a refresh) asks
// the backend even though what is held is fresh; alone, when it must not
// join a call that began before it (a refresh on request).
func (c *Cache) flight(k key, force, alone bool) <-chan singleflight.Result {
	c.mu.Lock()
	floor := c.floor[k.provider]
	c.mu.Unlock()
	// A read never joins a call that began before a Forget or Expire.
	name := k.flight() + "\x00" + strconv.FormatUint(floor, 10)
	switch {
	case alone:
		name += "\x00alone\x00" + strconv.FormatUint(c.gen.Add(1), 10)
	case force:
		name += "\x00refresh"
	}
	return c.group.DoChan(name, func() (any, error) {
		if !force {
			// A flight that ended just before this one began may have
			// stored a fresh answer already.
			if a, ok := c.fresh(k); ok {
				return a, nil
			}
		}
		return c.call(k), nil
	})
}

// fresh returns what is held for k if it is not expired.
func (c *Cache) fresh(k key) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Clock.Now()
	if e, ok := c.entries[k]; ok && now.Before(e.expires) {
		if e.val == nil {
			return answer{err: e.err}, true
		}
		return answer{val: e.val, gen: e.gen, freshFor: e.expires.Sub(now)}, true
	}
	return answer{}, false
}

// call asks the backend once for k and decides, by the kind of answer, what
// is kept and what the readers get.
func (c *Cache) call(k key) answer {
	gen := c.gen.Add(1)
	began := c.opts.Clock.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.budget(k))
	defer cancel()
	c.log.Debug("backend call", "op", k.String())
	val, err := c.lock(c.counted(k.provider, func() (any, error) { return c.fetch(ctx, k) }))

	var a answer
	switch kind := resolver.KindOf(err); kind {
	case resolver.KindOK:
		c.markUp(k.provider)
		a = c.storeValue(k, val, gen, began)
	case resolver.KindNotFound, resolver.KindPermission:
		c.markUp(k.provider)
		a = c.storeNegative(k, err, c.negativeTTL(), gen, began)
	case resolver.KindUnsupported:
		// The provider can do this (its type says so), but not here: a
		// negative answer about this directory.
		a = c.storeNegative(k, err, c.negativeTTL(), gen, began)
	case resolver.KindUnavailable, resolver.KindUnknown:
		var confirmed <-chan struct{}
		if kind == resolver.KindUnknown {
			c.log.Error("unexpected backend error; keeping what is cached", "op", k.String(), "error", err)
		} else if confirmed = c.suspect(k, err); confirmed == nil {
			a = c.servedInOutage(k, err) // down already: not the key's failure
			break
		}
		// The key's failure, until its provider is found down: its value
		// is kept and served. With nothing to serve, the readers wait for
		// the confirmation (bounded by its budget), so that the reads
		// after them know.
		a = c.storeFailure(k, err, gen)
		if a.val == nil && confirmed != nil {
			<-confirmed
		}
		if a.stale {
			c.log.Warn("backend unavailable; serving the last good value",
				"secret", k.String(), "expired_for", a.past.Round(time.Millisecond), "error", err)
		}
	default: // invalid, canceled: nothing learned about the key
		a = answer{err: err}
	}
	a.call = err
	return a
}

// budget is the budget of k's call: a value's read (two provider calls for
// a version), or one listing or probe.
func (c *Cache) budget(k key) time.Duration {
	if k.op == opGet {
		return c.opts.Deadlines.FetchFor(k.ref())
	}
	return c.opts.Deadlines.CallFor(k.provider)
}

// counted runs one backend call of provider and counts it, unless the
// answer is that the provider cannot do this (no call to speak of).
func (c *Cache) counted(provider string, f func() (any, error)) (any, error) {
	start := time.Now()
	val, err := f()
	if errors.Is(err, errors.ErrUnsupported) {
		return val, err
	}
	c.calls.Add(1)
	c.opts.Observer.BackendCall(provider, Result(err), time.Since(start))
	if errors.Is(err, resolver.ErrThrottled) {
		c.throttled.Add(1)
	}
	return val, err
}

// servedInOutage is what readers of k get when its provider is down: what
// is held, stale if need be, or err. Nothing is stored: the key did not
// fail, its provider did.
func (c *Cache) servedInOutage(k key, err error) answer {
	now := c.opts.Clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok && e.val != nil {
		return c.lastGood(e, now, err)
	}
	return answer{err: err}
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

func (c *Cache) negativeTTL() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.times.negativeTTL
}

// refresh calls for k again in the background: ahead of its expiry, or to
// retry a key whose call failed. Its readers keep being served meanwhile.
func (c *Cache) refresh(k key) {
	c.refreshes.Add(1)
	c.background(func() {
		<-c.flight(k, true, false)
		c.mu.Lock()
		if e, ok := c.entries[k]; ok {
			e.refreshing = false
			// A refresh that stored nothing new is not tried again at
			// once by every read that follows.
			now := c.opts.Clock.Now()
			if !now.Before(e.refreshAt) {
				e.refreshAt = now.Add(c.opts.ProbeMin)
			}
			if e.val != nil && e.lease == nil && c.holds[k] > 0 {
				// No read will come to try again: a held key's timer does.
				c.rearm(e, now)
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

// refreshDue runs when three quarters of e's freshness have passed: if e
// was read meanwhile, it is fetched again in the background.
func (c *Cache) refreshDue(e *entry) {
	c.mu.Lock()
	current := c.entries[e.key] == e
	// A lease is replaced only for a key read lately (see lease.go).
	// A renewal under way decides for itself.
	now := c.opts.Clock.Now()
	inUse := e.lease == nil || c.inUse(e, now) && !e.renewing
	held := c.holds[e.key] > 0
	start := current && (e.used || held) && inUse && c.startRefresh(e)
	if current && held && !start && e.lease == nil && e.val != nil && !e.refreshing {
		// Its provider is down: the held key asks again after the probe's
		// shortest wait, so that it hears of the end of the outage.
		c.rearm(e, now)
	}
	c.mu.Unlock()
	if start {
		c.refresh(e.key)
	}
}

// rearm arms e's refresh-ahead timer again, at its refreshAt and no sooner
// than ProbeMin from now: for a held key, which no read keeps refreshed.
// Called with mu held.
func (c *Cache) rearm(e *entry, now time.Time) {
	if c.ctx.Err() != nil {
		return
	}
	if e.timer != nil {
		e.timer.Stop()
	}
	at := laterOf(e.refreshAt, now.Add(c.opts.ProbeMin))
	e.timer = c.opts.Clock.AfterFunc(at.Sub(now), func() { c.refreshDue(e) })
}

// Hold keeps ref's value (ref.Field is ignored) in use until release is
// called, as if it were read all the while: it is refreshed ahead (a
// change is reported within about a TTL), a failed refresh is tried again
// with the key's back-off, a not-found answer is asked again, it is never
// evicted, and a lease of it is kept. The filesystem holds the values of
// the files the kernel holds: a program that read a file once and waits on
// inotify for its change reads nothing more. A held key costs one backend
// call per three quarters of its TTL (less the jitter) whether or not
// anyone reads it. Release is idempotent.
func (c *Cache) Hold(ref resolver.Reference) (release func()) {
	k := key{op: opGet, provider: ref.Provider, name: ref.Key, version: ref.Version}
	c.mu.Lock()
	c.holds[k]++
	// Held after its refresh was due (and let pass, unread): refreshed now.
	// Held with nothing to refresh (evicted, never fetched): fetched now.
	// Held as not found or failing: asked again in time.
	now := c.opts.Clock.Now()
	e := c.entries[k]
	start := e == nil || e.val != nil && e.lease == nil && !now.Before(e.refreshAt) && c.startRefresh(e)
	if e != nil && e.val == nil {
		c.askAgainIfHeld(e, e.expires, now)
	}
	c.mu.Unlock()
	if start {
		c.refresh(k)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			if c.holds[k]--; c.holds[k] <= 0 {
				delete(c.holds, k)
			}
			c.mu.Unlock()
		})
	}
}

// Held is how many values are held (Hold).
func (c *Cache) Held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.holds)
}

// Refresh asks the backend for ref's value now, in a call of its own (it
// joins no call that began before it), and returns once that call's answer
// is stored. When the backend does not answer, the last good value is kept
// and served as before; the error, wrapping ErrUnavailable, says so.
func (c *Cache) Refresh(ctx context.Context, ref resolver.Reference) error {
	if err := ref.Validate(); err != nil {
		return err
	}
	k := key{op: opGet, provider: ref.Provider, name: ref.Key, version: ref.Version}
	select {
	case res := <-c.flight(k, true, true):
		a := res.Val.(answer)
		switch kind := resolver.KindOf(a.call); {
		case kind == resolver.KindOK:
			return nil
		case a.val != nil:
			return fmt.Errorf("%s: the last good value is kept: %w", ref, a.call)
		case kind == resolver.KindUnavailable || kind == resolver.KindUnknown:
			return a.call
		}
		return a.err
	case <-ctx.Done():
		return gaveUp(ctx, ref)
	}
}

// Prefetch reads the current values of keys in provider that are not fresh
// in memory, in a batch where the provider can (resolver.BatchGetter), and
// stores them as if each had been read alone. It does nothing for a
// provider that cannot batch, while an outage is being confirmed, or while
// batches back off after a failure; it fails at once for a provider known
// to be down. A batch that finds the backend unavailable starts the
// confirmation of an outage. ctx bounds the wait; the call has its budget.
func (c *Cache) Prefetch(ctx context.Context, provider string, keys []string) error {
	if !c.src.Abilities(provider).Batch {
		return nil
	}
	now := c.opts.Clock.Now()
	var missing []string
	c.mu.Lock()
	h := c.healthOf(provider)
	switch {
	case h.down:
		c.mu.Unlock()
		return fmt.Errorf("batch %s: %w", provider, errProviderDown)
	case h.confirming != nil || now.Before(h.batchRetryAt):
		c.mu.Unlock()
		return nil
	}
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
		callCtx, cancel := context.WithTimeout(c.ctx, c.opts.Deadlines.CallFor(provider))
		defer cancel()
		gen := c.gen.Add(1)
		began := c.opts.Clock.Now()
		var got map[string]resolver.Secret
		_, err := c.counted(provider, func() (any, error) {
			var err error
			got, err = c.src.GetBatch(callCtx, provider, missing)
			return nil, err
		})
		for name, s := range got {
			if v, err := c.lock(s, nil); err == nil {
				c.storeValue(key{op: opGet, provider: provider, name: name}, v, gen, began)
			}
		}
		if len(got) > 0 {
			c.markUp(provider)
		}
		c.batchDone(provider, err)
		if resolver.KindOf(err) == resolver.KindUnavailable {
			c.suspect(key{op: opGet, provider: provider, name: missing[0]}, err)
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

// batchDone records how provider's batch ended: a failure backs batches
// off (ProbeMin, doubling to ProbeMax), an answer resets that.
func (c *Cache) batchDone(provider string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.healthOf(provider)
	switch resolver.KindOf(err) {
	case resolver.KindUnavailable, resolver.KindUnknown:
		h.batchFailures++
		h.batchRetryAt = c.opts.Clock.Now().Add(c.backoff(h.batchFailures))
	default:
		h.batchFailures, h.batchRetryAt = 0, time.Time{}
	}
}
