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

// clock is a fake clock; tests move it instead of sleeping.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// backend is a provider whose answers the test sets.
type backend struct {
	mu    sync.Mutex
	value string        // guarded by mu
	err   error         // guarded by mu; returned instead of the value when set
	gate  chan struct{} // when non-nil, Get waits for it to close (or ctx)
	calls atomic.Int64
}

func (b *backend) Name() string { return "b" }

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
	return []string{"a", "b/"}, nil
}

func newCache(clk *clock, opts cache.Options) *cache.Cache {
	opts.Now = clk.Now
	if opts.Rand == nil {
		opts.Rand = func() float64 { return 0 } // no jitter unless a test wants it
	}
	return cache.New(opts)
}

func get(t *testing.T, p resolver.Provider, key string) (string, error) {
	t.Helper()
	s, err := p.Get(context.Background(), key, "")
	return string(s.Value), err
}

func TestTTL(t *testing.T) {
	clk := newClock()
	c := newCache(clk, cache.Options{TTL: time.Minute})
	b := &backend{value: "v1"}
	p := c.Wrap(b)

	steps := []struct {
		advance   time.Duration
		set       string
		want      string
		wantCalls int64
	}{
		{0, "", "v1:k@", 1},
		{59 * time.Second, "v2", "v1:k@", 1}, // still fresh: the new value is not seen
		{time.Second, "", "v2:k@", 2},        // expired: asked again
		{30 * time.Second, "", "v2:k@", 2},
	}
	for i, st := range steps {
		clk.Advance(st.advance)
		if st.set != "" {
			b.set(st.set, nil)
		}
		got, err := get(t, p, "k")
		if err != nil || got != st.want {
			t.Fatalf("step %d: got %q, %v; want %q", i, got, err, st.want)
		}
		if n := b.calls.Load(); n != st.wantCalls {
			t.Fatalf("step %d: backend calls = %d, want %d", i, n, st.wantCalls)
		}
	}
	if got, want := c.Stats(), (cache.Stats{Hits: 2, Misses: 2, Calls: 2}); got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
}

func TestVersionsAreSeparateEntries(t *testing.T) {
	c := newCache(newClock(), cache.Options{})
	b := &backend{value: "v"}
	p := c.Wrap(b)
	for _, v := range []string{"", "1", "", "1", "2"} {
		if _, err := p.Get(context.Background(), "k", v); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.calls.Load(); got != 3 {
		t.Errorf("backend calls = %d, want 3 (one per version)", got)
	}
}

func TestNegativeTTL(t *testing.T) {
	clk := newClock()
	c := newCache(clk, cache.Options{TTL: time.Hour, NegativeTTL: 30 * time.Second})
	b := &backend{err: fmt.Errorf("x: %w", resolver.ErrNotFound)}
	p := c.Wrap(b)

	if _, err := get(t, p, "k"); !errors.Is(err, resolver.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	b.set("now here", nil)
	clk.Advance(29 * time.Second)
	if _, err := get(t, p, "k"); !errors.Is(err, resolver.ErrNotFound) {
		t.Fatalf("within the negative TTL: err = %v, want the cached ErrNotFound", err)
	}
	clk.Advance(time.Second)
	if got, err := get(t, p, "k"); err != nil || got != "now here:k@" {
		t.Fatalf("after the negative TTL: got %q, %v", got, err)
	}
	if got := b.calls.Load(); got != 2 {
		t.Errorf("backend calls = %d, want 2", got)
	}
}

func TestStaleOnError(t *testing.T) {
	unavailable := fmt.Errorf("down: %w", resolver.ErrUnavailable)
	tests := []struct {
		name      string
		maxStale  time.Duration
		advance   time.Duration // past the TTL
		err       error
		want      string
		wantErr   error
		wantStale uint64
	}{
		{"within max-stale", time.Hour, 59 * time.Minute, unavailable, "v1:k@", nil, 1},
		{"past max-stale", time.Hour, 61 * time.Minute, unavailable, "", resolver.ErrUnavailable, 0},
		{"max-stale never", -1, time.Second, unavailable, "", resolver.ErrUnavailable, 0},
		{"deadline counts as unavailable", time.Hour, time.Minute, context.DeadlineExceeded, "v1:k@", nil, 1},
		{"permission is not served stale", time.Hour, time.Second, resolver.ErrPermission, "", resolver.ErrPermission, 0},
		{"not found is not served stale", time.Hour, time.Second, resolver.ErrNotFound, "", resolver.ErrNotFound, 0},
		{"other errors are not served stale", time.Hour, time.Second, errors.New("boom"), "", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			c := newCache(clk, cache.Options{TTL: time.Minute, MaxStale: tt.maxStale})
			b := &backend{value: "v1"}
			p := c.Wrap(b)
			if _, err := get(t, p, "k"); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Minute + tt.advance)
			b.set("", tt.err)
			got, err := get(t, p, "k")
			switch {
			case tt.want != "":
				if err != nil || got != tt.want {
					t.Fatalf("got %q, %v; want the stale %q", got, err, tt.want)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %q, %v; want %v", got, err, tt.wantErr)
				}
			default:
				if err == nil {
					t.Fatalf("got %q, nil error; want an error", got)
				}
			}
			if s := c.Stats().Stale; s != tt.wantStale {
				t.Errorf("stale serves = %d, want %d", s, tt.wantStale)
			}
		})
	}
}

func TestStaleBacksOffThenRecovers(t *testing.T) {
	clk := newClock()
	c := newCache(clk, cache.Options{TTL: time.Minute, ErrorBackoff: 5 * time.Second})
	b := &backend{value: "v1"}
	p := c.Wrap(b)
	get(t, p, "k")
	clk.Advance(2 * time.Minute)
	b.set("", resolver.ErrUnavailable)
	for range 3 { // one failed refresh, then served stale without asking
		if got, err := get(t, p, "k"); err != nil || got != "v1:k@" {
			t.Fatalf("got %q, %v; want stale v1", got, err)
		}
	}
	if got := b.calls.Load(); got != 2 {
		t.Errorf("backend calls during back-off = %d, want 2", got)
	}
	b.set("v2", nil)
	clk.Advance(5 * time.Second)
	// After the back-off the reader still gets the stale value at once, and
	// the backend is asked again in the background.
	if got, err := get(t, p, "k"); err != nil || got != "v1:k@" {
		t.Fatalf("after the back-off: got %q, %v; want v1 without waiting", got, err)
	}
	for b.calls.Load() < 3 || c.Len() == 0 {
		time.Sleep(time.Millisecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := get(t, p, "k")
		if err == nil && got == "v2:k@" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background refresh never stored v2: last %q, %v", got, err)
		}
		time.Sleep(time.Millisecond)
	}
	if n := b.calls.Load(); n != 3 {
		t.Errorf("backend calls = %d, want 3", n)
	}
}

func TestReaderDeadlineServesStale(t *testing.T) {
	clk := newClock()
	c := newCache(clk, cache.Options{TTL: time.Minute})
	b := &backend{value: "v1"}
	p := c.Wrap(b)
	get(t, p, "k")
	clk.Advance(2 * time.Minute)
	b.gate = make(chan struct{}) // the backend now hangs until its deadline
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	s, err := p.Get(ctx, "k", "")
	if err != nil || string(s.Value) != "v1:k@" {
		t.Errorf("reader whose deadline passed = %q, %v; want the stale value", s.Value, err)
	}
}

func TestLeaseBoundsTTLAndStale(t *testing.T) {
	clk := newClock()
	c := newCache(clk, cache.Options{TTL: time.Hour})
	lease := &leaseBackend{}
	p := c.Wrap(lease)
	p.Get(context.Background(), "k", "")
	clk.Advance(10 * time.Second)
	lease.down = true
	if _, err := p.Get(context.Background(), "k", ""); !errors.Is(err, resolver.ErrUnavailable) {
		t.Errorf("past its lease, with the backend down: err = %v, want ErrUnavailable (never stale)", err)
	}
	if lease.calls != 2 {
		t.Errorf("calls = %d, want 2 (the lease ended the entry)", lease.calls)
	}
}

type leaseBackend struct {
	calls int
	down  bool
}

func (l *leaseBackend) Name() string { return "lease" }
func (l *leaseBackend) Get(context.Context, string, string) (resolver.Secret, error) {
	l.calls++
	if l.down {
		return resolver.Secret{}, resolver.ErrUnavailable
	}
	return resolver.Secret{Value: []byte("x"), MaxAge: 10 * time.Second}, nil
}

func TestJitterBounds(t *testing.T) {
	const ttl = 100 * time.Second
	for _, r := range []float64{0, 0.5, 0.999999} {
		t.Run(fmt.Sprint(r), func(t *testing.T) {
			clk := newClock()
			c := newCache(clk, cache.Options{TTL: ttl, Jitter: 0.1, Rand: func() float64 { return r }})
			b := &backend{value: "v"}
			p := c.Wrap(b)
			get(t, p, "k")
			wantLife := ttl - time.Duration(0.1*r*float64(ttl))
			clk.Advance(wantLife - time.Nanosecond)
			get(t, p, "k")
			if n := b.calls.Load(); n != 1 {
				t.Fatalf("expired before %v: calls = %d", wantLife, n)
			}
			clk.Advance(time.Nanosecond)
			get(t, p, "k")
			if n := b.calls.Load(); n != 2 {
				t.Fatalf("not expired at %v: calls = %d", wantLife, n)
			}
		})
	}
}

func TestJitterSpreadsExpiry(t *testing.T) {
	// With the real random source, 100 keys fetched at once do not all
	// expire at the same instant, and none lives past the TTL or under 90%.
	clk := newClock()
	c := cache.New(cache.Options{TTL: 100 * time.Second, Now: clk.Now})
	b := &backend{value: "v"}
	p := c.Wrap(b)
	for i := range 100 {
		get(t, p, fmt.Sprint(i))
	}
	clk.Advance(90*time.Second - time.Nanosecond)
	for i := range 100 {
		get(t, p, fmt.Sprint(i))
	}
	if n := b.calls.Load(); n != 100 {
		t.Fatalf("keys expired before 90%% of the TTL: calls = %d, want 100", n)
	}
	clk.Advance(5 * time.Second)
	for i := range 100 {
		get(t, p, fmt.Sprint(i))
	}
	if n := b.calls.Load() - 100; n == 0 || n == 100 {
		t.Errorf("at 95%% of the TTL %d of 100 keys had expired; want some but not all", n)
	}
	clk.Advance(5 * time.Second)
	for i := range 100 {
		get(t, p, fmt.Sprint(i))
	}
	// All must have expired by the full TTL: each was refreshed once more.
	st := c.Stats()
	if st.Calls < 200 {
		t.Errorf("calls = %d after the full TTL, want at least 200", st.Calls)
	}
}

func TestSingleflight(t *testing.T) {
	c := newCache(newClock(), cache.Options{})
	b := &backend{value: "v", gate: make(chan struct{})}
	p := c.Wrap(b)

	const n = 64
	var wg sync.WaitGroup
	results := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = get(t, p, "k")
		})
	}
	// Let the readers pile up behind the one call, then let it finish.
	for c.Stats().Misses < n {
		time.Sleep(time.Millisecond)
	}
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
	c := newCache(newClock(), cache.Options{})
	b := &backend{value: "v", gate: make(chan struct{})}
	p := c.Wrap(b)

	first := make(chan error, 1)
	go func() { _, err := p.Get(context.Background(), "k", ""); first <- err }()
	for b.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Get(ctx, "k", ""); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled waiter: err = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := p.Get(ctx, "k", ""); !errors.Is(err, resolver.ErrUnavailable) {
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

func TestFirstReaderCancelDoesNotKillSharedCall(t *testing.T) {
	c := newCache(newClock(), cache.Options{})
	b := &backend{value: "v", gate: make(chan struct{})}
	p := c.Wrap(b)
	ctx, cancel := context.WithCancel(context.Background())
	go p.Get(ctx, "k", "")
	for b.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan error, 1)
	go func() { _, err := p.Get(context.Background(), "k", ""); second <- err }()
	for c.Stats().Misses < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	close(b.gate)
	if err := <-second; err != nil {
		t.Errorf("second reader after the first gave up: %v", err)
	}
}

func TestMaxEntries(t *testing.T) {
	c := newCache(newClock(), cache.Options{MaxEntries: 3})
	b := &backend{value: "v"}
	p := c.Wrap(b)
	for _, k := range []string{"a", "b", "c", "a", "d"} { // "b" is the least recently used
		get(t, p, k)
	}
	if n := c.Len(); n != 3 {
		t.Errorf("entries = %d, want 3", n)
	}
	before := b.calls.Load()
	get(t, p, "a")
	get(t, p, "b")
	if got := b.calls.Load() - before; got != 1 {
		t.Errorf("calls for a (kept) and b (evicted) = %d, want 1", got)
	}
}

func TestWrapKeepsListing(t *testing.T) {
	c := newCache(newClock(), cache.Options{})
	if _, ok := c.Wrap(&backend{}).(resolver.Lister); ok {
		t.Error("wrapped non-lister implements Lister")
	}
	lb := &listingBackend{}
	l, ok := c.Wrap(lb).(resolver.Lister)
	if !ok {
		t.Fatal("wrapped lister does not implement Lister")
	}
	for range 3 {
		names, err := l.List(context.Background(), "")
		if err != nil || len(names) != 2 {
			t.Fatalf("List = %q, %v", names, err)
		}
	}
	if got := lb.calls.Load(); got != 1 {
		t.Errorf("list calls = %d, want 1 (cached)", got)
	}
	if got := c.Wrap(lb).Name(); got != "b" {
		t.Errorf("Name() = %q, want the wrapped provider's", got)
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

func TestGetBatchFillsTheCache(t *testing.T) {
	c := newCache(newClock(), cache.Options{})
	bb := &batchBackend{backend: backend{value: "single"}}
	p := c.Wrap(bb)
	get(t, p, "a") // already fresh: not asked for again
	bg, ok := p.(resolver.BatchGetter)
	if !ok {
		t.Fatal("wrapped batch getter does not implement BatchGetter")
	}
	got, err := bg.GetBatch(context.Background(), []string{"a", "b", "c", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	if len(bb.batches) != 1 || fmt.Sprint(bb.batches[0]) != "[b c missing]" {
		t.Errorf("batches = %q, want one for [b c missing]", bb.batches)
	}
	if string(got["a"].Value) != "single:a@" || string(got["b"].Value) != "batch:b" {
		t.Errorf("GetBatch = %v", got)
	}
	before := bb.calls.Load()
	for _, k := range []string{"b", "c"} {
		if v, err := get(t, p, k); err != nil || v != "batch:"+k {
			t.Errorf("Get(%s) after the batch = %q, %v", k, v, err)
		}
	}
	if n := bb.calls.Load() - before; n != 0 {
		t.Errorf("reads after the batch made %d single calls, want 0", n)
	}
	if _, ok := c.Wrap(&listingBackend{}).(resolver.BatchGetter); ok {
		t.Error("a wrapped provider without GetBatch implements BatchGetter")
	}
}
