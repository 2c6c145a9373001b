package cache

// Provider health. It is the connection's, not a key's: one key that fails
// (a program that exits 1 for it, a path that answers 500) must not take
// its provider's other keys with it.
//
// A provider is marked down only when a call's answer is about reaching
// the backend (resolver.KindUnavailable: refused, reset, timed out, 5xx,
// throttled, sealed, its own credentials rejected) and a second call that
// is not about that key confirms it:
//
//   - the backend's own health call, where the provider has one
//     (resolver.HealthChecker: Vault's sys/health);
//   - else a key of that provider whose last answer was a value (a
//     witness; a key whose failure is its own stops being one).
//
// Where neither exists (nothing of the provider has answered yet), the
// failure stays the key's. The confirmation runs once per provider at a
// time, in the background, under its own budget; every read after the one
// that discovered the failure knows of it: one that has a value to serve
// gets it at once, stale, and one that has none waits for the outcome, as
// does the discoverer itself when it has none.
//
// While a provider is down, nothing new waits on it: a cached value or
// listing is served stale at once (up to MaxStale), anything else fails
// at once with ErrUnavailable, and prefetches are not made. One probe,
// with back-off from ProbeMin doubling to ProbeMax, repeats the
// confirming call, and then asks for the last key a read was refused (so
// that witnesses that have come to fail alone, or a health call that says
// no while reads would work, cannot keep the provider down). A value, a
// not-found or a denied answer from any call marks the provider up.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// errProviderDown is the error of a read that was not tried because its
// provider is known to be down.
var errProviderDown = fmt.Errorf("provider known to be down: %w", resolver.ErrUnavailable)

// health is what is known of one provider. Guarded by Cache.mu.
type health struct {
	gen     uint64 // counts outages, so that a probe of an old one stops
	lastErr string // the kind of the last failure (Result), never its text
	down    bool
	since   time.Time
	backoff time.Duration
	timer   Timer
	// confirming is closed when the confirmation under way ends; nil when
	// none runs. While one runs, reads that have a value to serve are
	// served it stale at once, and others wait for its outcome.
	confirming chan struct{}
	// epoch counts the ends of outages: a key's failure from an earlier
	// epoch no longer holds back its reads.
	epoch uint64
	// witnesses are the last two keys of the provider that answered with
	// a value, most recent first: a call about them confirms an outage.
	witnesses [2]key
	nwit      int
	// wanted is the last key a read asked for and was refused while the
	// provider is down: the probe asks for it too.
	wanted key
	// batchFailures counts failed batches in a row; no batch is made
	// before batchRetryAt.
	batchFailures int
	batchRetryAt  time.Time
}

// healthOf returns provider's health, making it. Called with mu held.
func (c *Cache) healthOf(provider string) *health {
	h := c.health[provider]
	if h == nil {
		h = &health{}
		c.health[provider] = h
	}
	return h
}

// noteWitness records that k answered with a value. Called with mu held.
func (c *Cache) noteWitness(k key) {
	h := c.healthOf(k.provider)
	if h.nwit > 0 && h.witnesses[0] == k {
		return
	}
	h.witnesses[1], h.witnesses[0] = h.witnesses[0], k
	h.nwit = min(h.nwit+1, 2)
}

// dropWitness forgets k as a witness: its last answer was a failure of
// its own. Called with mu held.
func (c *Cache) dropWitness(k key) {
	h := c.health[k.provider]
	if h == nil {
		return
	}
	for i := 0; i < h.nwit; i++ {
		if h.witnesses[i] == k {
			copy(h.witnesses[i:], h.witnesses[i+1:])
			h.nwit--
			h.witnesses[h.nwit] = key{}
			return
		}
	}
}

// isDown reports whether provider is marked down. Called with mu held.
func (c *Cache) isDown(provider string) bool {
	h := c.health[provider]
	return h != nil && h.down
}

// suspect starts the confirmation that err, k's unavailable answer, is its
// provider's (see check), unless one is under way or the provider is known
// down. It returns a channel closed when that confirmation ends, or nil
// when the provider is down already.
func (c *Cache) suspect(k key, err error) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.healthOf(k.provider)
	h.lastErr = Result(err)
	switch {
	case h.down:
		return nil
	case h.confirming != nil:
		return h.confirming
	}
	done := make(chan struct{})
	h.confirming = done
	started := c.background(func() {
		checked, cerr := c.check(k.provider, k)
		down := checked && resolver.KindOf(cerr) == resolver.KindUnavailable
		if down {
			c.markDown(k.provider, cerr)
		}
		c.mu.Lock()
		if !down {
			// Not the provider's failure (or none could tell): k's own,
			// and k no longer vouches for its provider.
			c.dropWitness(k)
		}
		h.confirming = nil
		c.mu.Unlock()
		close(done)
	})
	if !started { // closed
		h.confirming = nil
		close(done)
	}
	return done
}

// check makes the call that tells whether provider answers at all: its
// health call, else a call for a witness other than except. checked is
// false when there is no such call to make.
func (c *Cache) check(provider string, except key) (checked bool, err error) {
	type call struct {
		run    func(context.Context) error
		budget time.Duration
	}
	var calls []call
	if c.src.Abilities(provider).Health {
		calls = append(calls, call{func(ctx context.Context) error { return c.src.CheckHealth(ctx, provider) }, c.opts.Deadlines.CallFor(provider)})
	} else {
		c.mu.Lock()
		h := c.healthOf(provider)
		for _, w := range h.witnesses[:h.nwit] {
			if w != except {
				calls = append(calls, call{func(ctx context.Context) error { _, err := c.src.Fetch(ctx, w.ref()); return err }, c.budget(w)})
			}
		}
		c.mu.Unlock()
	}
	for _, cl := range calls {
		ctx, cancel := context.WithTimeout(c.ctx, cl.budget)
		_, err = c.counted(provider, func() (any, error) { return nil, cl.run(ctx) })
		cancel()
		if resolver.KindOf(err) != resolver.KindUnavailable {
			return true, err // an answer: the backend is there
		}
	}
	return len(calls) > 0, err
}

// markDown marks provider down, unless it is already, and arms its probe.
func (c *Cache) markDown(provider string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.healthOf(provider)
	h.lastErr = Result(err)
	if h.down || c.ctx.Err() != nil {
		return
	}
	h.gen++
	h.down, h.since, h.backoff = true, c.opts.Clock.Now(), c.opts.ProbeMin
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
	h.epoch++
	h.wanted = key{}
	if h.timer != nil {
		h.timer.Stop()
	}
	c.log.Info("provider answers again", "provider", provider, "down_for", c.opts.Clock.Now().Sub(h.since).Round(time.Millisecond))
}

// runProbe repeats the confirming call while provider is down; while it
// still fails as unavailable, it is tried again after twice the wait.
func (c *Cache) runProbe(provider string, h *health, gen uint64) {
	c.mu.Lock()
	if c.health[provider] != h || !h.down || h.gen != gen || c.ctx.Err() != nil {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()

	checked, err := c.check(provider, key{})
	if k := resolver.KindOf(err); checked && k != resolver.KindUnavailable && k != resolver.KindCanceled {
		c.markUp(provider)
		return
	}
	// The keys that confirmed the outage may fail alone by now (or the
	// health call says no while reads would work): a key a reader wants
	// ends the outage too.
	c.mu.Lock()
	wanted := h.wanted
	c.mu.Unlock()
	if wanted != (key{}) {
		ctx, cancel := context.WithTimeout(c.ctx, c.budget(wanted))
		_, werr := c.counted(provider, func() (any, error) { return c.src.Fetch(ctx, wanted.ref()) })
		cancel()
		if k := resolver.KindOf(werr); k != resolver.KindUnavailable && k != resolver.KindCanceled {
			c.markUp(provider)
			return
		}
		err = werr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !h.down || h.gen != gen || c.ctx.Err() != nil {
		return
	}
	h.lastErr = Result(err)
	h.backoff = min(2*h.backoff, c.opts.ProbeMax)
	c.armProbe(provider, h)
}

// Health is what is known of one provider.
type Health struct {
	Provider string
	Up       bool
	LastErr  string    // the kind of its last failure (see Result); "" if none
	Since    time.Time // when it went down, while it is
}

// Health returns what is known of each provider that has answered or
// failed once.
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
	return c.isDown(provider)
}

// able fails at once, with no call, for what k's provider cannot do
// (known from its type); a read of a value needs no look.
func (c *Cache) able(k key) error {
	if k.op == opGet {
		return nil
	}
	a := c.src.Abilities(k.provider)
	if k.op == opList && !a.List || k.op == opProbe && !a.Probe {
		return fmt.Errorf("%s: %w", k, errors.ErrUnsupported)
	}
	return nil
}
