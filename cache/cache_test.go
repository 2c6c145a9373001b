package cache_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// clock is a fake clock; tests move it instead of sleeping. Timers fire in
// Advance, in the test's goroutine.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer // guarded by mu
}

type timer struct {
	c       *clock
	at      time.Time
	f       func()
	stopped bool // guarded by c.mu
}

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	// A stopped timer is let go, as the runtime's are.
	if i := slices.Index(t.c.timers, t); i >= 0 {
		t.c.timers = slices.Delete(t.c.timers, i, i+1)
	}
	return was
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) AfterFunc(d time.Duration, f func()) cache.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock by d, firing the timers due on the way, in order.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		slices.SortStableFunc(c.timers, func(a, b *timer) int { return a.at.Compare(b.at) })
		var due *timer
		for i, t := range c.timers {
			if t.stopped {
				continue
			}
			if !t.at.After(end) {
				due = t
				c.timers = slices.Delete(c.timers, i, i+1)
			}
			break
		}
		if due == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		due.stopped = true
		c.now = due.at
		c.mu.Unlock()
		due.f()
	}
}

// backend is a provider whose answers the test sets.
type backend struct {
	name  string
	mu    sync.Mutex
	value string        // guarded by mu
	err   error         // guarded by mu; returned instead of the value when set
	gate  chan struct{} // when non-nil, Get waits for it to close (or ctx)
	calls atomic.Int64
}

func (b *backend) Name() string {
	if b.name == "" {
		return "b"
	}
	return b.name
}

func (b *backend) set(value string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.value, b.err = value, err
}

func (b *backend) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	b.calls.Add(1)
	if b.gate != nil {
		select {
		case <-b.gate:
		case <-ctx.Done():
			return resolver.Secret{}, ctx.Err()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return resolver.Secret{}, b.err
	}
	return resolver.Secret{Value: []byte(b.value + ":" + key + "@" + version)}, nil
}

type listingBackend struct{ backend }

func (l *listingBackend) List(ctx context.Context, dir string) ([]string, error) {
	l.calls.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	return []string{"a", "b/", "a"}, nil
}

func newCache(t *testing.T, clk *clock, opts cache.Options, ps ...resolver.Provider) *cache.Cache {
	t.Helper()
	r, err := resolver.New(ps...)
	if err != nil {
		t.Fatal(err)
	}
	opts.Clock = clk
	if opts.Rand == nil {
		opts.Rand = func() float64 { return 0 } // no jitter unless a test wants it
	}
	c := cache.New(r, opts)
	t.Cleanup(c.Close)
	return c
}

func get(t *testing.T, c *cache.Cache, key string) (string, error) {
	t.Helper()
	v, err := c.Get(context.Background(), resolver.Reference{Provider: "b", Key: key})
	return string(v.Value), err
}

// waitFor waits for background work (a refresh, a probe) to be done. It
// polls the condition; it never waits through a TTL.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTTL(t *testing.T) {
	clk := newClock()
	b := &backend{value: "v1"}
	c := newCache(t, clk, cache.Options{TTL: time.Minute}, b)
	ref := resolver.Reference{Provider: "b", Key: "k"}

	v, err := c.Get(context.Background(), ref)
	if err != nil || string(v.Value) != "v1:k@" || v.FreshFor != time.Minute {
		t.Fatalf("first read = %q fresh for %v, %v", v.Value, v.FreshFor, err)
	}
	b.set("v2", nil)
	clk.Advance(59 * time.Second) // nobody reads: no refresh ahead
	c.WaitIdle()
	if n := b.calls.Load(); n != 1 {
		t.Fatalf("calls = %d before expiry with no reads, want 1", n)
	}
	clk.Advance(time.Second)
	v, err = c.Get(context.Background(), ref)
	if err != nil || string(v.Value) != "v2:k@" {
		t.Fatalf("after the TTL = %q, %v; want the new value", v.Value, err)
	}
	if got, want := c.Stats(), (cache.Stats{Misses: 2, Calls: 2}); got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
}

func TestRefreshAhead(t *testing.T) {
	clk := newClock()
	b := &backend{value: "v1"}
	c := newCache(t, clk, cache.Options{TTL: 100 * time.Second}, b)
	get(t, c, "hot")
	get(t, c, "idle")
	var changes []cache.Change
	var mu sync.Mutex
	c.OnChange(func(ch cache.Change) { mu.Lock(); changes = append(changes, ch); mu.Unlock() })

	// Over ten TTLs the hot key is read every 10s; the idle one never again.
	b.set("v2", nil)
	for range 100 {
		clk.Advance(10 * time.Second)
		got, err := get(t, c, "hot")
		if err != nil || (got != "v1:hot@" && got != "v2:hot@") {
			t.Fatalf("hot read = %q, %v", got, err)
		}
		if m := c.Stats().Misses; m != 2 {
			t.Fatalf("a read of a hot key waited for the backend (misses %d) at %v: %+v", m, clk.Now(), c.Stats())
		}
		c.WaitIdle()
	}
	st := c.Stats()
	// One call per 75 s of freshness over 1000 s, plus the two first reads.
	if st.Misses != 2 || st.Refreshes < 10 || st.Refreshes > 15 {
		t.Errorf("stats %+v: want 2 misses and one refresh per TTL or so (10 to 15)", st)
	}
	if got := b.calls.Load(); got != int64(2+st.Refreshes) {
		t.Errorf("backend calls = %d, want %d: the idle key cost nothing after its first read", got, 2+st.Refreshes)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 1 || changes[0].Ref != (resolver.Reference{Provider: "b", Key: "hot"}) || changes[0].Deleted {
		t.Errorf("changes = %+v, want one for b:hot (v1 -> v2)", changes)
	}
}

func TestRefreshAheadTimerOnlyForKeysInUse(t *testing.T) {
	clk := newClock()
	b := &backend{value: "v1"}
	c := newCache(t, clk, cache.Options{TTL: 100 * time.Second}, b)
	get(t, c, "k")
	clk.Advance(10 * time.Second)
	get(t, c, "k") // read while fresh: in use
	clk.Advance(70 * time.Second)
	c.WaitIdle()
	if n, r := b.calls.Load(), c.Stats().Refreshes; n != 2 || r != 1 {
		t.Fatalf("calls %d, refreshes %d; want the timer's one refresh", n, r)
	}
	// The refreshed entry is not read: its timer does nothing.
	clk.Advance(80 * time.Second)
	c.WaitIdle()
	if n := b.calls.Load(); n != 2 {
		t.Errorf("calls = %d, want 2 (no refresh of an entry nobody read)", n)
	}
}

func TestVersionsAreSeparateEntries(t *testing.T) {
	b := &backend{value: "v"}
	c := newCache(t, newClock(), cache.Options{}, b)
	for _, v := range []string{"", "1", "", "1", "2"} {
		if _, err := c.Get(context.Background(), resolver.Reference{Provider: "b", Key: "k", Version: v}); err != nil {
			t.Fatal(err)
		}
	}
	// This backend has a secret for every exact name ("k@1"): one call each.
	if got := b.calls.Load(); got != 3 {
		t.Errorf("backend calls = %d, want 3 (one entry per version)", got)
	}
}

func TestFieldsShareOneValue(t *testing.T) {
	b := &backend{value: `{"a":1,"b":"x"}`}
	b.value = `{"a":1,"b":"x"}`
	p := &jsonBackend{}
	c := newCache(t, newClock(), cache.Options{}, p)
	for _, f := range []string{"a", "b", "", "a"} {
		v, err := c.Get(context.Background(), resolver.Reference{Provider: "j", Key: "k", Field: f})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"a": "1", "b": "x", "": `{"a":1,"b":"x"}`}[f]
		if string(v.Value) != want {
			t.Errorf("field %q = %q, want %q", f, v.Value, want)
		}
	}
	if _, err := c.Get(context.Background(), resolver.Reference{Provider: "j", Key: "k", Field: "nope"}); !errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("missing field: %v, want ErrNotFound", err)
	}
	if p.calls.Load() != 1 {
		t.Errorf("calls = %d, want 1 for every field of one secret", p.calls.Load())
	}
}

type jsonBackend struct{ calls atomic.Int64 }

func (j *jsonBackend) Name() string { return "j" }
func (j *jsonBackend) Get(context.Context, string, string) (resolver.Secret, error) {
	j.calls.Add(1)
	return resolver.Secret{Value: []byte(`{"a":1,"b":"x"}`)}, nil
}

func TestNegativeTTL(t *testing.T) {
	clk := newClock()
	b := &backend{err: fmt.Errorf("x: %w", resolver.ErrNotFound)}
	c := newCache(t, clk, cache.Options{TTL: time.Hour, NegativeTTL: 30 * time.Second}, b)

	if _, err := get(t, c, "k"); !errors.Is(err, resolver.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	b.set("now here", nil)
	clk.Advance(29 * time.Second)
	if _, err := get(t, c, "k"); !errors.Is(err, resolver.ErrNotFound) {
		t.Fatalf("within the negative TTL: err = %v, want the cached ErrNotFound", err)
	}
	clk.Advance(time.Second)
	if got, err := get(t, c, "k"); err != nil || got != "now here:k@" {
		t.Fatalf("after the negative TTL: got %q, %v", got, err)
	}
	if got := b.calls.Load(); got != 2 {
		t.Errorf("backend calls = %d, want 2", got)
	}
}

func TestStaleOnError(t *testing.T) {
	unavailable := fmt.Errorf("down: %w", resolver.ErrUnavailable)
	tests := []struct {
		name        string
		maxStale    time.Duration
		advance     time.Duration // past the TTL
		err         error
		want        string
		wantErr     error
		wantStale   uint64
		wantChanged bool
	}{
		{name: "within max-stale", maxStale: time.Hour, advance: 59 * time.Minute, err: unavailable, want: "v1:k@", wantStale: 1},
		{name: "past max-stale", maxStale: time.Hour, advance: 61 * time.Minute, err: unavailable, wantErr: resolver.ErrUnavailable},
		{name: "max-stale zero: never", maxStale: 0, advance: time.Second, err: unavailable, wantErr: resolver.ErrUnavailable},
		{name: "deadline counts as unavailable", maxStale: time.Hour, advance: time.Minute, err: context.DeadlineExceeded, want: "v1:k@", wantStale: 1},
		{name: "unknown errors keep the value", maxStale: time.Hour, advance: time.Second, err: errors.New("boom"), want: "v1:k@", wantStale: 1},
		{name: "permission replaces the value", maxStale: time.Hour, advance: time.Second, err: resolver.ErrPermission, wantErr: resolver.ErrPermission, wantChanged: true},
		{name: "not found replaces the value", maxStale: time.Hour, advance: time.Second, err: resolver.ErrNotFound, wantErr: resolver.ErrNotFound, wantChanged: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			b := &backend{value: "v1"}
			c := newCache(t, clk, cache.Options{TTL: time.Minute, MaxStale: tt.maxStale}, b)
			var changes []cache.Change
			c.OnChange(func(ch cache.Change) { changes = append(changes, ch) })
			if _, err := get(t, c, "k"); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Minute + tt.advance)
			b.set("", tt.err)
			got, err := get(t, c, "k")
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %q, %v; want the stale %q", got, err, tt.want)
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %q, %v; want %v", got, err, tt.wantErr)
			}
			if s := c.Stats().Stale; s != tt.wantStale {
				t.Errorf("stale serves = %d, want %d", s, tt.wantStale)
			}
			if changed := len(changes) == 1 && changes[0].Deleted; changed != tt.wantChanged {
				t.Errorf("changes = %+v; want a deletion: %v", changes, tt.wantChanged)
			}
		})
	}
}

func TestProviderHealth(t *testing.T) {
	clk := newClock()
	b := &backend{value: "v1"}
	other := &backend{name: "o", value: "o1"}
	c := newCache(t, clk, cache.Options{TTL: time.Minute, MaxStale: time.Hour, ProbeMin: time.Second, ProbeMax: 8 * time.Second}, b, other)
	for _, k := range []string{"k1", "k2", "k3"} {
		get(t, c, k)
	}
	c.Get(context.Background(), resolver.Reference{Provider: "o", Key: "x"})
	clk.Advance(2 * time.Minute)
	b.set("", fmt.Errorf("refused: %w", resolver.ErrUnavailable))

	// The first reader finds the outage (one call) and starts its
	// confirmation (a call for each of the two keys that answered last);
	// every reader is served stale at once, and only the first calls.
	for _, k := range []string{"k1", "k2", "k3", "k1"} {
		if got, err := get(t, c, k); err != nil || got != "v1:"+k+"@" {
			t.Fatalf("%s while down = %q, %v; want the stale value", k, got, err)
		}
	}
	c.WaitIdle() // the confirmation runs in the background
	if n := b.calls.Load(); n != 6 {
		t.Errorf("calls = %d, want 6 (3 first reads, one that found the outage, two that confirmed it)", n)
	}
	if !c.Down("b") || c.Down("o") {
		t.Errorf("down: b %v, o %v; want b only", c.Down("b"), c.Down("o"))
	}
	// An uncached key is not asked for while the provider is down.
	calls := b.calls.Load()
	if _, err := get(t, c, "new"); !errors.Is(err, resolver.ErrUnavailable) || b.calls.Load() != calls {
		t.Errorf("uncached while down: %v after %d calls, want ErrUnavailable at once", err, b.calls.Load()-calls)
	}
	// The probe backs off: 1s, 2s, 4s, 8s, 8s; each asks the two keys
	// that answered last, then the key a read was refused.
	for _, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		clk.Advance(wait - time.Millisecond)
		c.WaitIdle()
		if n := b.calls.Load(); n != calls {
			t.Fatalf("probe before its back-off (%v) ran", wait)
		}
		clk.Advance(time.Millisecond)
		c.WaitIdle()
		if n := b.calls.Load(); n != calls+3 {
			t.Fatalf("after %v: calls %d, want %d (one probe)", wait, n, calls+3)
		}
		calls += 3
	}
	b.set("v2", nil)
	clk.Advance(8 * time.Second)
	c.WaitIdle()
	if c.Down("b") {
		t.Fatal("still down after a probe that got an answer")
	}
	if got, err := get(t, c, "k2"); err != nil || got != "v2:k2@" {
		t.Errorf("after recovery = %q, %v; want v2 (read through)", got, err)
	}
}

func TestListingFailureIsRemembered(t *testing.T) {
	clk := newClock()
	lb := &listingBackend{}
	lb.err = fmt.Errorf("list: %w", resolver.ErrUnavailable)
	c := newCache(t, clk, cache.Options{ProbeMin: 5 * time.Second}, lb)
	for range 3 {
		if _, _, err := c.List(context.Background(), "b", ""); !errors.Is(err, resolver.ErrUnavailable) {
			t.Fatalf("List = %v, want ErrUnavailable", err)
		}
	}
	if n := lb.calls.Load(); n != 1 {
		t.Errorf("list calls = %d, want 1 (the failure is remembered)", n)
	}
	lb.set("", nil)
	clk.Advance(5 * time.Second)
	l, _, err := c.List(context.Background(), "b", "")
	if err != nil || !slices.Equal(l.Names(), []string{"a", "b/"}) || !l.Has("b/") || l.Has("b") {
		t.Errorf("List after its back-off = %v, %v; want [a b/]", l, err)
	}
}

func TestCallBudgetIsNotTheReaders(t *testing.T) {
	// A reader with a short deadline starts the call; a patient reader who
	// joins it gets the answer that comes after the first one gave up.
	b := &backend{value: "v", gate: make(chan struct{})}
	c := newCache(t, newClock(), cache.Options{Deadlines: resolver.Deadlines{Call: time.Minute}}, b)
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Get(short, resolver.Reference{Provider: "b", Key: "k"}); !errors.Is(err, resolver.ErrUnavailable) {
		t.Fatalf("short reader: %v, want ErrUnavailable after its own deadline", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(context.Background(), resolver.Reference{Provider: "b", Key: "k"})
		done <- err
	}()
	waitFor(t, "the second reader joins the call", func() bool { return c.Waiting() == 1 })
	close(b.gate)
	if err := <-done; err != nil {
		t.Errorf("patient reader: %v", err)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("calls = %d, want 1 shared call", n)
	}
}

func TestCallBudgetEndsAHangingCall(t *testing.T) {
	b := &backend{value: "v", gate: make(chan struct{})} // never opened
	c := newCache(t, newClock(), cache.Options{Deadlines: resolver.Deadlines{Call: 30 * time.Millisecond}}, b)
	_, err := c.Get(context.Background(), resolver.Reference{Provider: "b", Key: "k"})
	if !errors.Is(err, resolver.ErrUnavailable) {
		t.Errorf("hanging backend: %v, want ErrUnavailable within the call's budget", err)
	}
}

func TestReaderDeadlineServesStale(t *testing.T) {
	clk := newClock()
	b := &backend{value: "v1"}
	c := newCache(t, clk, cache.Options{TTL: time.Minute, MaxStale: time.Hour}, b)
	get(t, c, "k")
	clk.Advance(2 * time.Minute)
	b.gate = make(chan struct{}) // the backend now hangs until its deadline
	defer close(b.gate)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	v, err := c.Get(ctx, resolver.Reference{Provider: "b", Key: "k"})
	if err != nil || string(v.Value) != "v1:k@" || v.FreshFor != 0 {
		t.Errorf("reader whose deadline passed = %q (fresh for %v), %v; want the stale value", v.Value, v.FreshFor, err)
	}
}

func TestLeaseBoundsTTLAndStale(t *testing.T) {
	clk := newClock()
	lease := &leaseBackend{}
	c := newCache(t, clk, cache.Options{TTL: time.Hour, MaxStale: time.Hour}, lease)
	v, err := c.Get(context.Background(), resolver.Reference{Provider: "lease", Key: "k"})
	if err != nil || v.FreshFor != 10*time.Second {
		t.Fatalf("Get = fresh for %v, %v; want the lease, 10s", v.FreshFor, err)
	}
	clk.Advance(10 * time.Second)
	lease.down.Store(true)
	if _, err := c.Get(context.Background(), resolver.Reference{Provider: "lease", Key: "k"}); !errors.Is(err, resolver.ErrUnavailable) {
		t.Errorf("past its lease, with the backend down: err = %v, want ErrUnavailable (never stale)", err)
	}
	if n := lease.calls.Load(); n != 2 {
		t.Errorf("calls = %d, want 2 (the lease ended the entry)", n)
	}
}

// A value's NotAfter bounds it: fresh and stale until then, never after,
// whatever the TTL and MaxStale.
func TestNotAfterBoundsTTLAndStale(t *testing.T) {
	clk := newClock()
	b := &twoValues{n: 1, notAfter: clk.Now().Add(10 * time.Minute)}
	c := newCache(t, clk, cache.Options{TTL: time.Hour, MaxStale: time.Hour}, b)
	ref := resolver.Reference{Provider: "p", Key: "k"}
	if v, err := c.Get(context.Background(), ref); err != nil || v.FreshFor != 10*time.Minute {
		t.Fatalf("Get = fresh for %v, %v; want 10m, until NotAfter", v.FreshFor, err)
	}
	b.setDown()
	clk.Advance(9 * time.Minute) // past the refresh ahead, before NotAfter
	if v, err := c.Get(context.Background(), ref); err != nil || string(v.Value) != "v2" {
		t.Errorf("before NotAfter, with the backend down: %q, %v; want the value", v.Value, err)
	}
	clk.Advance(2 * time.Minute)
	if v, err := c.Get(context.Background(), ref); !errors.Is(err, resolver.ErrUnavailable) {
		t.Errorf("past NotAfter, with the backend down: %q, %v; want ErrUnavailable (never stale past it)", v.Value, err)
	}

	// Far away, it does not take stale serving away.
	far := &twoValues{n: 1, notAfter: clk.Now().Add(365 * 24 * time.Hour)}
	c2 := newCache(t, clk, cache.Options{TTL: time.Minute, MaxStale: time.Hour}, far)
	if _, err := c2.Get(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	far.setDown()
	clk.Advance(30 * time.Minute)
	if v, err := c2.Get(context.Background(), ref); err != nil || string(v.Value) != "v2" {
		t.Errorf("a year before NotAfter, in an outage past the TTL: %q, %v; want the value served stale", v.Value, err)
	}
}

type leaseBackend struct {
	calls atomic.Int64
	down  atomic.Bool
}

func (l *leaseBackend) Name() string { return "lease" }
func (l *leaseBackend) Get(context.Context, string, string) (resolver.Secret, error) {
	l.calls.Add(1)
	if l.down.Load() {
		return resolver.Secret{}, resolver.ErrUnavailable
	}
	return resolver.Secret{Value: []byte("x"), MaxAge: 10 * time.Second}, nil
}

func TestJitterBounds(t *testing.T) {
	const ttl = 100 * time.Second
	for _, r := range []float64{0, 0.5, 0.999999} {
		t.Run(fmt.Sprint(r), func(t *testing.T) {
			clk := newClock()
			b := &backend{value: "v"}
			c := newCache(t, clk, cache.Options{TTL: ttl, Jitter: 0.1, Rand: func() float64 { return r }}, b)
			get(t, c, "k")
			wantLife := ttl - time.Duration(0.1*r*float64(ttl))
			clk.Advance(wantLife - time.Nanosecond)
			if v, err := c.Get(context.Background(), resolver.Reference{Provider: "b", Key: "k"}); err != nil || v.FreshFor != time.Nanosecond {
				t.Fatalf("just before %v: fresh for %v, %v; want 1ns", wantLife, v.FreshFor, err)
			}
			c.WaitIdle()
			if n := b.calls.Load(); n != 2 {
				t.Errorf("calls = %d, want 2 (a read past the refresh point refreshes ahead)", n)
			}
		})
	}
}

func TestJitterSpreadsExpiry(t *testing.T) {
	// With the real random source, 100 keys fetched at once do not all
	// expire at the same instant, and none lives past the TTL or under 90%.
	clk := newClock()
	b := &backend{value: "v"}
	r, _ := resolver.New(b)
	c := cache.New(r, cache.Options{TTL: 100 * time.Second, Clock: clk})
	defer c.Close()
	var shortest, longest time.Duration = time.Hour, 0
	for i := range 100 {
		v, err := c.Get(context.Background(), resolver.Reference{Provider: "b", Key: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		shortest, longest = min(shortest, v.FreshFor), max(longest, v.FreshFor)
	}
	if shortest < 90*time.Second || longest > 100*time.Second || shortest == longest {
		t.Errorf("freshness from %v to %v; want spread within [90s, 100s]", shortest, longest)
	}
}

func TestSingleflight(t *testing.T) {
	b := &backend{value: "v", gate: make(chan struct{})}
	c := newCache(t, newClock(), cache.Options{}, b)

	const n = 64
	var wg sync.WaitGroup
	results := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = get(t, c, "k")
		})
	}
	// Let the readers pile up behind the one call, then let it finish.
	waitFor(t, "readers pile up", func() bool { return c.Stats().Misses == n })
	close(b.gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || results[i] != "v:k@" {
			t.Fatalf("reader %d: got %q, %v", i, results[i], errs[i])
		}
	}
	if got := b.calls.Load(); got != 1 {
		t.Errorf("backend calls = %d, want 1", got)
	}
}

func TestWaiterStopsWhenItsContextEnds(t *testing.T) {
	b := &backend{value: "v", gate: make(chan struct{})}
	c := newCache(t, newClock(), cache.Options{}, b)
	ref := resolver.Reference{Provider: "b", Key: "k"}

	first := make(chan error, 1)
	go func() { _, err := c.Get(context.Background(), ref); first <- err }()
	waitFor(t, "the call starts", func() bool { return b.calls.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Get(ctx, ref); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled waiter: err = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := c.Get(ctx, ref); !errors.Is(err, resolver.ErrUnavailable) {
		t.Errorf("timed-out waiter: err = %v, want ErrUnavailable", err)
	}
	// The shared call was not canceled with them.
	close(b.gate)
	if err := <-first; err != nil {
		t.Errorf("first reader: %v", err)
	}
	if got := b.calls.Load(); got != 1 {
		t.Errorf("backend calls = %d, want 1", got)
	}
}

func TestMaxEntries(t *testing.T) {
	b := &backend{value: "v"}
	c := newCache(t, newClock(), cache.Options{MaxEntries: 3}, b)
	for _, k := range []string{"a", "b", "c", "a", "d"} { // "b" is the least recently used
		get(t, c, k)
	}
	if n, _ := c.Len(); n != 3 {
		t.Errorf("entries = %d, want 3", n)
	}
	before := b.calls.Load()
	get(t, c, "a")
	get(t, c, "b")
	if got := b.calls.Load() - before; got != 1 {
		t.Errorf("calls for a (kept) and b (evicted) = %d, want 1", got)
	}
}

func TestMissingNamesNeverEvictValues(t *testing.T) {
	b := &missingBackend{}
	c := newCache(t, newClock(), cache.Options{MaxEntries: 10, MaxNegative: 5}, b)
	for i := range 10 {
		if _, err := c.Get(context.Background(), resolver.Reference{Provider: "m", Key: fmt.Sprint("k", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1200 {
		c.Get(context.Background(), resolver.Reference{Provider: "m", Key: fmt.Sprint("missing", i)})
	}
	values, negatives := c.Len()
	if values != 10 || negatives != 5 {
		t.Errorf("held %d values and %d negatives, want 10 and 5", values, negatives)
	}
	before := b.calls.Load()
	for i := range 10 {
		c.Get(context.Background(), resolver.Reference{Provider: "m", Key: fmt.Sprint("k", i)})
	}
	if n := b.calls.Load() - before; n != 0 {
		t.Errorf("after a flood of missing names, reading the values made %d calls, want 0", n)
	}
}

type missingBackend struct{ calls atomic.Int64 }

func (m *missingBackend) Name() string { return "m" }
func (m *missingBackend) Get(_ context.Context, key, _ string) (resolver.Secret, error) {
	m.calls.Add(1)
	if len(key) > 7 && key[:7] == "missing" {
		return resolver.Secret{}, resolver.ErrNotFound
	}
	return resolver.Secret{Value: []byte(key)}, nil
}

func TestListingIsCached(t *testing.T) {
	lb := &listingBackend{}
	c := newCache(t, newClock(), cache.Options{}, lb)
	for range 3 {
		l, _, err := c.List(context.Background(), "b", "")
		if err != nil || len(l.Names()) != 2 {
			t.Fatalf("List = %v, %v", l, err)
		}
	}
	if got := lb.calls.Load(); got != 1 {
		t.Errorf("list calls = %d, want 1 (cached)", got)
	}
	nl := &backend{name: "n"}
	c = newCache(t, newClock(), cache.Options{}, nl)
	if _, _, err := c.List(context.Background(), "n", ""); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("List of a provider that cannot list = %v, want ErrUnsupported", err)
	}
}

// batchBackend can read many keys in one call.
type batchBackend struct {
	backend
	batches [][]string
}

func (b *batchBackend) GetBatch(ctx context.Context, keys []string) (map[string]resolver.Secret, error) {
	b.batches = append(b.batches, keys)
	out := make(map[string]resolver.Secret)
	for _, k := range keys {
		if k != "missing" {
			out[k] = resolver.Secret{Value: []byte("batch:" + k)}
		}
	}
	return out, nil
}

func TestPrefetchFillsTheCache(t *testing.T) {
	bb := &batchBackend{backend: backend{value: "single"}}
	c := newCache(t, newClock(), cache.Options{}, bb)
	get(t, c, "a") // already fresh: not asked for again
	if err := c.Prefetch(context.Background(), "b", []string{"a", "b", "c", "missing"}); err != nil {
		t.Fatal(err)
	}
	if len(bb.batches) != 1 || fmt.Sprint(bb.batches[0]) != "[b c missing]" {
		t.Errorf("batches = %q, want one for [b c missing]", bb.batches)
	}
	before := bb.calls.Load()
	for _, k := range []string{"b", "c"} {
		if v, err := get(t, c, k); err != nil || v != "batch:"+k {
			t.Errorf("Get(%s) after the batch = %q, %v", k, v, err)
		}
	}
	if n := bb.calls.Load() - before; n != 0 {
		t.Errorf("reads after the batch made %d single calls, want 0", n)
	}
	plain := &backend{name: "p"}
	c = newCache(t, newClock(), cache.Options{}, plain)
	if err := c.Prefetch(context.Background(), "p", []string{"x", "y"}); err != nil || plain.calls.Load() != 0 {
		t.Errorf("Prefetch on a provider without batches = %v with %d calls; want nothing", err, plain.calls.Load())
	}
}

func TestFailedRefreshKeepsTheFreshValueAndBacksOff(t *testing.T) {
	clk := newClock()
	lb := &listingBackend{}
	c := newCache(t, clk, cache.Options{TTL: 100 * time.Second, MaxStale: 0, ProbeMin: 5 * time.Second}, lb)
	if _, _, err := c.List(context.Background(), "b", ""); err != nil {
		t.Fatal(err)
	}
	lb.set("", fmt.Errorf("blip: %w", resolver.ErrUnavailable))
	clk.Advance(80 * time.Second) // past the refresh point
	for range 5 {
		if l, _, err := c.List(context.Background(), "b", ""); err != nil || len(l.Names()) != 2 {
			t.Fatalf("a fresh listing whose refresh failed: %v, %v; want it kept", l, err)
		}
		c.WaitIdle()
	}
	if n := lb.calls.Load(); n != 2 {
		t.Errorf("list calls = %d, want 2 (the first, one failed refresh; then a back-off)", n)
	}
}

func TestPrefetchAfterCloseReturns(t *testing.T) {
	bb := &batchBackend{}
	r, _ := resolver.New(bb)
	c := cache.New(r, cache.Options{})
	c.Close()
	done := make(chan error, 1)
	go func() { done <- c.Prefetch(context.Background(), "b", []string{"x", "y"}) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Prefetch after Close never returned")
	}
}

func TestUnsupportedIsNoCall(t *testing.T) {
	b := &backend{name: "n"} // cannot list or probe
	c := newCache(t, newClock(), cache.Options{}, b)
	for range 3 {
		if _, _, err := c.Probe(context.Background(), "n", "d"); !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("Probe = %v, want ErrUnsupported", err)
		}
	}
	if st := c.Stats(); st.Calls != 0 || st.Misses != 0 {
		t.Errorf("stats %+v: want no backend call and no miss (known from the provider's type)", st)
	}
}

func TestForget(t *testing.T) {
	b := &backend{value: "v"}
	c := newCache(t, newClock(), cache.Options{}, b)
	var changes []cache.Change
	c.OnChange(func(ch cache.Change) { changes = append(changes, ch) })
	for _, k := range []string{"a/x", "a/y", "ab", "b"} {
		get(t, c, k)
	}
	c.Forget("b", "a")
	if len(changes) != 2 {
		t.Errorf("changes = %+v, want a/x and a/y", changes)
	}
	before := b.calls.Load()
	for _, k := range []string{"a/x", "ab", "b"} {
		get(t, c, k)
	}
	if n := b.calls.Load() - before; n != 1 {
		t.Errorf("calls after Forget(a) = %d, want 1 (a/x only)", n)
	}
}

// NotAfter holds on every path that sets an entry's times: a value that
// lands in an older entry after an Expire, and a lease.
func TestNotAfterOnEveryPath(t *testing.T) {
	ref := resolver.Reference{Provider: "p", Key: "k"}
	t.Run("after an Expire", func(t *testing.T) {
		clk := newClock()
		f := &twoValues{}
		c := newCache(t, clk, cache.Options{TTL: time.Minute, MaxStale: time.Hour}, f)
		if _, err := c.Get(context.Background(), ref); err != nil {
			t.Fatal(err)
		}
		clk.Advance(2 * time.Minute)
		gate := make(chan struct{})
		f.mu.Lock()
		f.gate, f.notAfter = gate, clk.Now().Add(5*time.Minute)
		f.mu.Unlock()
		got := make(chan string, 1)
		go func() {
			v, _ := c.Get(context.Background(), ref)
			got <- string(v.Value)
		}()
		waitFor(t, "the second call", func() bool { return f.calls.Load() == 2 })
		c.Expire("p", "") // the call began before: its value lands in the older entry
		f.mu.Lock()
		f.gate = nil
		f.mu.Unlock()
		close(gate)
		if v := <-got; v != "v2" {
			t.Fatalf("the reader got %q, want v2", v)
		}
		clk.Advance(10 * time.Minute)
		f.setDown()
		if v, err := c.Get(context.Background(), ref); err == nil {
			t.Errorf("5 minutes past NotAfter, the backend down: %q served (stale %v), want an error", v.Value, v.Stale)
		}
	})
	t.Run("with a lease", func(t *testing.T) {
		clk := newClock()
		now := clk.Now()
		f := &twoValues{n: 1, notAfter: now.Add(5 * time.Minute), lease: &resolver.Lease{Start: now, Expires: now.Add(24 * time.Hour)}}
		c := newCache(t, clk, cache.Options{TTL: time.Hour, MaxStale: time.Hour}, f)
		if v, err := c.Get(context.Background(), ref); err != nil || v.FreshFor > 5*time.Minute {
			t.Fatalf("Get = fresh for %v, %v; want at most until NotAfter", v.FreshFor, err)
		}
		clk.Advance(10 * time.Minute)
		f.setDown()
		if v, err := c.Get(context.Background(), ref); err == nil {
			t.Errorf("past NotAfter, the backend down: %q served (stale %v), want an error", v.Value, v.Stale)
		}
	})
}
