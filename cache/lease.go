package cache

// Leases. A value that carries a resolver.Lease was made for the read that
// got it (a Vault database credential, an issued certificate): reading it
// again makes another, which must never happen by a timer alone. Its life
// is the lease's, not the TTL's:
//
//   - fresh until the lease's replace point (resolver.Lease.ReplaceAt:
//     when RenewBefore of its term, a third by default, is left; for a
//     renewable lease, halfway from there to its end, which leaves its
//     renewal time to be tried again). Readers
//     get it from memory; the kernel is told to ask again within the TTL,
//     so that a file in use is seen to be read.
//   - renewed, when renewable, at about two thirds of its term (less up
//     to Jitter of it), for as long as the backend allows and the key was
//     read within LeaseIdle. A renewal changes no value: no change is
//     reported, no reader waits. A renewal that fails as unavailable is
//     tried again with the key's back-off while the lease lasts.
//   - replaced ahead of its end: once it cannot be renewed (the backend
//     granted less than asked, or it never could), a key read within
//     LeaseIdle is fetched again in the background a little before its
//     replace point (a re-issue: a new lease, a change reported). The old
//     value is left to expire, never revoked: a reader may still use it.
//   - stale while its backend is down, but only until the lease ends;
//     never past that. A lease its backend no longer knows is not served
//     at all.
//   - a key nobody read within LeaseIdle is neither renewed nor replaced:
//     its lease runs out, and the next read makes a new one.

import (
	"context"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// DefaultLeaseIdle is how long after its last read a leased key is still
// renewed and replaced ahead.
const DefaultLeaseIdle = time.Hour

// leaseRenewer is the Source's ability to renew leases (resolver.Resolver
// has it); a Source without it renews nothing.
type leaseRenewer interface {
	Renew(ctx context.Context, provider string, lease resolver.Lease) (resolver.Lease, error)
}

// LeaseObserver is the optional part of an Observer told of leases.
type LeaseObserver interface {
	// LeaseRenewed: a renewal of a lease of provider ended with result.
	LeaseRenewed(provider, result string)
	// LeaseReplaced: a leased value of provider was replaced by a new one.
	LeaseReplaced(provider string)
}

// leaseOf returns the lease of a value, if it has one.
func leaseOf(val any) *resolver.Lease {
	if s, ok := val.(resolver.Secret); ok && s.Lease != nil {
		l := *s.Lease
		return &l
	}
	return nil
}

// leaseTimes sets e's expiry, refresh ahead and end of staleness from its
// lease (see the top of this file).
func (c *Cache) leaseTimes(e *entry) {
	l := e.lease
	e.expires = l.ReplaceAt()
	if l.Renewable {
		// Renewed at two thirds of the term; should renewals keep failing,
		// a new value is asked for halfway from the replace point to the
		// end.
		e.expires = e.expires.Add(l.Expires.Sub(e.expires) / 2)
	}
	if !e.expires.After(l.Start) {
		e.expires = l.Start.Add(l.Term() / 2)
	}
	// Served stale while the backend is down, up to the lease's end and
	// not an instant past it.
	e.staleUntil = l.Expires.Add(-time.Nanosecond)
	if l.Renewable {
		e.refreshAt = e.expires // renewed, not replaced, while it can be
		return
	}
	span := e.expires.Sub(l.Start)
	e.refreshAt = e.expires.Add(-time.Duration(c.opts.Jitter * c.opts.Rand() * float64(span)))
}

// armLease arms e's timers: the refresh ahead (a replacement) and, for a
// renewable lease, its renewal. Called with mu held.
func (c *Cache) armLease(e *entry, now time.Time) {
	if c.ctx.Err() != nil {
		return
	}
	e.stopTimers()
	e.renewTimer = nil
	e.timer = c.opts.Clock.AfterFunc(max(e.refreshAt.Sub(now), 0), func() { c.refreshDue(e) })
	if _, ok := c.src.(leaseRenewer); ok && e.lease.Renewable && c.src.Abilities(e.key.provider).Renew {
		at := e.lease.Start.Add(c.jitter(e.lease.Term() * 2 / 3))
		e.renewTimer = c.opts.Clock.AfterFunc(max(at.Sub(now), 0), func() { c.renewDue(e) })
	}
}

// inUse reports whether e was read within LeaseIdle of now, or is held
// (Hold). Called with mu
// held.
func (c *Cache) inUse(e *entry, now time.Time) bool {
	return now.Sub(e.lastRead) <= c.opts.LeaseIdle || c.holds[e.key] > 0
}

// renewDue runs at e's renewal time: the lease is renewed in the
// background if its key is in use.
func (c *Cache) renewDue(e *entry) {
	now := c.opts.Clock.Now()
	c.mu.Lock()
	if c.entries[e.key] != e || e.lease == nil || !e.lease.Renewable || e.renewing {
		c.mu.Unlock()
		return
	}
	if !c.inUse(e, now) {
		c.mu.Unlock()
		c.log.Debug("lease not renewed: its secret was not read lately", "secret", e.key.String(), "idle", now.Sub(e.lastRead).Round(time.Second))
		return
	}
	e.renewing = true
	lease := *e.lease
	c.mu.Unlock()
	started := c.background(func() { c.renew(e, lease) })
	if !started {
		c.mu.Lock()
		e.renewing = false
		c.mu.Unlock()
	}
}

// renew makes one renewal call for e's lease and decides by its answer.
func (c *Cache) renew(e *entry, lease resolver.Lease) {
	rn := c.src.(leaseRenewer)
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.Deadlines.CallFor(e.key.provider))
	var got resolver.Lease
	_, err := c.counted(e.key.provider, func() (any, error) {
		var err error
		got, err = rn.Renew(ctx, e.key.provider, lease)
		return nil, err
	})
	cancel()
	if o, ok := c.opts.Observer.(LeaseObserver); ok {
		o.LeaseRenewed(e.key.provider, Result(err))
	}
	now := c.opts.Clock.Now()
	c.mu.Lock()
	e.renewing = false
	if c.entries[e.key] != e || c.ctx.Err() != nil {
		c.mu.Unlock()
		return
	}
	replace := false
	switch kind := resolver.KindOf(err); kind {
	case resolver.KindOK:
		e.renewFailures = 0
		got.RenewBefore = lease.RenewBefore
		e.lease = &got
		c.leaseTimes(e)
		boundByNotAfter(e)
		c.armLease(e, now)
		c.log.Debug("lease renewed", "secret", e.key.String(), "term", got.Term().Round(time.Second), "renewable", got.Renewable)
	case resolver.KindNotFound, resolver.KindPermission:
		// The backend no longer knows the lease (revoked, expired) or will
		// not extend it: the value may no longer work, so it is served no
		// more, and a key in use gets a new one now.
		c.log.Warn("lease could not be renewed; fetching a new value", "secret", e.key.String(), "error", err)
		e.lease.Renewable = false
		e.expires, e.refreshAt, e.staleUntil = now, now, time.Time{}
		replace = (e.used || c.holds[e.key] > 0) && c.inUse(e, now) && c.startRefresh(e)
	case resolver.KindCanceled, resolver.KindInvalid, resolver.KindUnsupported:
	default:
		// Unavailable: tried again with the key's back-off while the lease
		// lasts; past its replace point, the refresh ahead takes over.
		e.renewFailures++
		at := now.Add(c.backoff(e.renewFailures))
		if at.Before(e.expires) {
			e.renewTimer = c.opts.Clock.AfterFunc(at.Sub(now), func() { c.renewDue(e) })
		}
		c.log.Warn("lease renewal failed; trying again", "secret", e.key.String(), "in", at.Sub(now).Round(time.Millisecond), "error", err)
	}
	c.mu.Unlock()
	if replace {
		c.refresh(e.key)
	}
}

// LeaseStats is what the cache holds of leases.
type LeaseStats struct {
	Held     int       // leased values held whose lease has not ended
	Nearest  time.Time // the nearest end of those; zero when none
	Renewing int       // renewals under way
}

// Leases returns what the cache holds of leases.
func (c *Cache) Leases() LeaseStats {
	now := c.opts.Clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var s LeaseStats
	for _, e := range c.entries {
		if e.renewing {
			s.Renewing++
		}
		if e.lease == nil || !now.Before(e.lease.Expires) || e.staleUntil.IsZero() {
			continue
		}
		s.Held++
		if s.Nearest.IsZero() || e.lease.Expires.Before(s.Nearest) {
			s.Nearest = e.lease.Expires
		}
	}
	return s
}
