package cache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// leaser makes a new credential at every read, leased for term, renewable
// up to maxLife after it was made (zero: not renewable), as Vault's
// dynamic secrets are.
type leaser struct {
	clk     *clock
	term    time.Duration
	maxLife time.Duration
	issues  atomic.Int64
	renews  atomic.Int64

	mu       sync.Mutex
	down     bool                 // guarded by mu; every call is unavailable
	renewErr error                // guarded by mu; renewals fail so
	made     map[string]time.Time // guarded by mu; lease id → when it was made
}

func (l *leaser) Name() string { return "db" }

func (l *leaser) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return resolver.Secret{}, resolver.ErrUnavailable
	}
	n := l.issues.Add(1)
	now := l.clk.Now()
	id := fmt.Sprintf("lease-%d", n)
	if l.made == nil {
		l.made = make(map[string]time.Time)
	}
	l.made[id] = now
	return resolver.Secret{Value: fmt.Appendf(nil, `{"password":"p%d","username":"u%d"}`, n, n),
		Lease: &resolver.Lease{ID: id, Start: now, Expires: now.Add(l.term), Renewable: l.maxLife > 0}}, nil
}

func (l *leaser) Renew(ctx context.Context, lease resolver.Lease) (resolver.Lease, error) {
	l.renews.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.down:
		return resolver.Lease{}, resolver.ErrUnavailable
	case l.renewErr != nil:
		return resolver.Lease{}, l.renewErr
	}
	now := l.clk.Now()
	end := now.Add(l.term)
	if last := l.made[lease.ID].Add(l.maxLife); last.Before(end) {
		end = last
	}
	return resolver.Lease{ID: lease.ID, Start: now, Expires: end, Renewable: end.Sub(now) >= l.term}, nil
}

func (l *leaser) set(down bool, renewErr error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down, l.renewErr = down, renewErr
}

// changes counts the changes a cache reports.
func changes(c *cache.Cache) *atomic.Int64 {
	var n atomic.Int64
	c.OnChange(func(cache.Change) { n.Add(1) })
	return &n
}

var dbRef = resolver.Reference{Provider: "db", Key: "creds/app"}

func readField(t *testing.T, c *cache.Cache, field string) (string, error) {
	t.Helper()
	ref := dbRef
	ref.Field = field
	v, err := c.Get(context.Background(), ref)
	return string(v.Value), err
}

// A lease is renewed at two thirds of its term while its key is read; the
// value, and so the file, does not change, and nobody reads a new one.
// Once the backend grants less than asked, the value is replaced ahead of
// its end, once, and the change reported.
func TestLeaseRenewedThenReplaced(t *testing.T) {
	clk := newClock()
	start := clk.Now()
	l := &leaser{clk: clk, term: 30 * time.Second, maxLife: 90 * time.Second}
	c := newCache(t, clk, cache.Options{TTL: 5 * time.Second}, l)
	changed := changes(c)
	if got, err := readField(t, c, "username"); err != nil || got != "u1" {
		t.Fatalf("got %q, %v, want u1", got, err)
	}
	// Renewals at 20s, 40s, 60s (each a full term) and 80s (10s left of
	// the lease's life: the last).
	for i, at := range []time.Duration{20, 40, 60, 80} {
		clk.Advance(10 * time.Second)
		if got, err := readField(t, c, "password"); err != nil || got != "p1" {
			t.Fatalf("renewal %d: got %q, %v, want p1 (the same issuance)", i+1, got, err)
		}
		clk.Advance(10 * time.Second)
		want := clk.Now().Add(min(30*time.Second, 90*time.Second-clk.Now().Sub(start)))
		waitFor(t, fmt.Sprintf("renewal %d at %ds", i+1, at), func() bool {
			s := c.Leases()
			return l.renews.Load() == int64(i+1) && s.Renewing == 0 && s.Nearest.Equal(want)
		})
		if got, err := readField(t, c, "username"); err != nil || got != "u1" {
			t.Fatalf("after renewal %d: got %q, %v, want u1", i+1, got, err)
		}
	}
	if n := l.issues.Load(); n != 1 {
		t.Fatalf("issues after renewals: got %d, want 1", n)
	}
	if n := changed.Load(); n != 0 {
		t.Fatalf("changes reported for renewals: got %d, want 0", n)
	}
	// The last term ends at 90s; a third of it (10s) left at 86.7s: the
	// value is replaced then, in the background.
	clk.Advance(7 * time.Second)
	waitFor(t, "the replacement", func() bool { return l.issues.Load() == 2 && changed.Load() == 1 })
	if got, err := readField(t, c, "username"); err != nil || got != "u2" {
		t.Fatalf("after the replacement: got %q, %v, want u2", got, err)
	}
	if n := l.renews.Load(); n != 4 {
		t.Fatalf("renewals: got %d, want 4", n)
	}
}

// A key nobody reads for LeaseIdle is neither renewed nor replaced; a read
// after its replace point makes a new lease.
func TestIdleLeaseIsLetGo(t *testing.T) {
	clk := newClock()
	l := &leaser{clk: clk, term: 30 * time.Second, maxLife: time.Hour}
	c := newCache(t, clk, cache.Options{TTL: 5 * time.Second, LeaseIdle: 15 * time.Second}, l)
	if _, err := readField(t, c, "username"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Second)
	if _, err := readField(t, c, "username"); err != nil { // read at 10s: idle from then
		t.Fatal(err)
	}
	clk.Advance(10 * time.Second) // the renewal (20s) came 10s after the last read: renewed
	waitFor(t, "the renewal of a key in use", func() bool { s := c.Leases(); return s.Renewing == 0 && l.renews.Load() == 1 })
	clk.Advance(30 * time.Second) // the next renewal (40s) found it idle for 30s
	if n := l.renews.Load(); n != 1 {
		t.Fatalf("renewals of an idle key: got %d, want 1", n)
	}
	if n := l.issues.Load(); n != 1 {
		t.Fatalf("an idle key was replaced: %d issues, want 1", n)
	}
	if got, err := readField(t, c, "username"); err != nil || got != "u2" {
		t.Fatalf("a read after the replace point: got %q, %v, want u2 (a new lease)", got, err)
	}
}

// While the backend is down, a leased value is served stale up to its
// lease's end, and never past it, whatever MaxStale says.
func TestLeaseServedInAnOutageUntilItsEnd(t *testing.T) {
	clk := newClock()
	l := &leaser{clk: clk, term: 30 * time.Second}
	c := newCache(t, clk, cache.Options{TTL: 5 * time.Second, MaxStale: time.Hour}, l)
	if _, err := readField(t, c, "username"); err != nil {
		t.Fatal(err)
	}
	l.set(true, nil)
	for _, at := range []time.Duration{21 * time.Second, 29 * time.Second} {
		clk.Advance(at - clk.Now().Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
		if got, err := readField(t, c, "username"); err != nil || got != "u1" {
			t.Fatalf("at %s, within the lease: got %q, %v, want u1 served stale", at, got, err)
		}
	}
	clk.Advance(2 * time.Second) // 31s: the lease ended at 30s
	if got, err := readField(t, c, "username"); resolver.KindOf(err) != resolver.KindUnavailable {
		t.Fatalf("past the lease's end: got %q, %v, want unavailable", got, err)
	}
	l.set(false, nil)
	clk.Advance(time.Minute) // past every back-off
	if got, err := readField(t, c, "username"); err != nil || got != "u2" {
		t.Fatalf("after the outage: got %q, %v, want u2", got, err)
	}
}

// A lease the backend no longer knows is served no more: a key in use gets
// a new one at once.
func TestLeaseTheBackendForgotIsReplaced(t *testing.T) {
	clk := newClock()
	l := &leaser{clk: clk, term: 30 * time.Second, maxLife: time.Hour}
	c := newCache(t, clk, cache.Options{TTL: 5 * time.Second}, l)
	if _, err := readField(t, c, "username"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Second)
	if _, err := readField(t, c, "username"); err != nil {
		t.Fatal(err)
	}
	l.set(false, fmt.Errorf("lease not found: %w", resolver.ErrNotFound))
	clk.Advance(10 * time.Second)
	waitFor(t, "a new value in place of a forgotten lease", func() bool { return l.issues.Load() == 2 })
	if got, err := readField(t, c, "username"); err != nil || got != "u2" {
		t.Fatalf("got %q, %v, want u2", got, err)
	}
}

// A renewal that fails as unavailable is tried again with back-off while
// the lease lasts; one that succeeds later keeps the same value.
func TestLeaseRenewalRetried(t *testing.T) {
	clk := newClock()
	l := &leaser{clk: clk, term: 30 * time.Second, maxLife: time.Hour}
	c := newCache(t, clk, cache.Options{TTL: 5 * time.Second, ProbeMin: time.Second, ProbeMax: 2 * time.Second}, l)
	if _, err := readField(t, c, "username"); err != nil {
		t.Fatal(err)
	}
	l.set(false, errors.Join(resolver.ErrUnavailable, errors.New("HTTP 503")))
	clk.Advance(10 * time.Second)
	if _, err := readField(t, c, "username"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Second)
	waitFor(t, "the first renewal", func() bool { s := c.Leases(); return s.Renewing == 0 && l.renews.Load() == 1 })
	l.set(false, nil)
	clk.Advance(time.Second)
	waitFor(t, "the renewal tried again", func() bool { s := c.Leases(); return s.Renewing == 0 && l.renews.Load() == 2 })
	if got, err := readField(t, c, "username"); err != nil || got != "u1" || l.issues.Load() != 1 {
		t.Fatalf("got %q, %v with %d issues, want u1 from one issue", got, err, l.issues.Load())
	}
	if s := c.Leases(); s.Held != 1 || !s.Nearest.Equal(clk.Now().Add(30*time.Second)) {
		t.Fatalf("Leases: got %+v, want 1 held, ending 30s after the renewal", s)
	}
}

// A leased value stays fresh for long, but the kernel is told to ask again
// within the TTL, so that a file in use is seen to be read.
func TestLeasedValueFreshForAtMostTheTTL(t *testing.T) {
	clk := newClock()
	l := &leaser{clk: clk, term: time.Hour}
	c := newCache(t, clk, cache.Options{TTL: 5 * time.Second}, l)
	v, err := c.Get(context.Background(), dbRef)
	if err != nil {
		t.Fatal(err)
	}
	if v.FreshFor != 5*time.Second {
		t.Fatalf("FreshFor: got %s, want the TTL, 5s", v.FreshFor)
	}
	clk.Advance(time.Minute)
	if _, err := c.Get(context.Background(), dbRef); err != nil || l.issues.Load() != 1 {
		t.Fatalf("a read a minute later: %v, %d issues, want 1 (fresh for the lease, not the TTL)", err, l.issues.Load())
	}
}
