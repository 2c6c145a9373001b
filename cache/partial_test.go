package cache_test

// Tests of the engine under partial failure: one key failing, floods of
// missing names, calls that finish out of order, outages known in advance.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

var errRefused = fmt.Errorf("connection refused: %w", resolver.ErrUnavailable)

// scripted is a provider whose every key the test sets: values with
// versions, keys that fail alone, a backend that is down. A call takes the
// answer when it begins, then waits for hold (if set): so a slow call
// returns what was current when it began.
type scripted struct {
	name string
	mu   sync.Mutex
	vals map[string]int   // guarded by mu; key → version; absent: not found
	bad  map[string]error // guarded by mu; keys that fail alone
	down bool             // guarded by mu
	hold chan struct{}    // guarded by mu; when set, calls wait for it
	// noCount: calls are not counted by key (a flood of names would grow
	// the test's own memory).
	noCount bool
	// calls counts Get calls by key; health the health calls.
	calls  sync.Map
	health atomic.Int64
}

func newScripted(name string) *scripted {
	return &scripted{name: name, vals: make(map[string]int), bad: make(map[string]error)}
}

func (s *scripted) Name() string { return s.name }

func (s *scripted) set(k string, v int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vals[k] = v
}

func (s *scripted) fail(k string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.bad, k)
	} else {
		s.bad[k] = err
	}
}

func (s *scripted) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *scripted) setHold(ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = ch
}

func (s *scripted) callsOf(k string) int64 {
	n, _ := s.calls.LoadOrStore(k, new(atomic.Int64))
	return n.(*atomic.Int64).Load()
}

func (s *scripted) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	s.mu.Lock()
	if !s.noCount {
		n, _ := s.calls.LoadOrStore(key, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	var (
		sec  resolver.Secret
		err  error
		hold = s.hold
	)
	v, ok := s.vals[key]
	switch {
	case s.down:
		err = errRefused
	case s.bad[key] != nil:
		err = s.bad[key]
	case !ok:
		err = resolver.ErrNotFound
	default:
		sec = resolver.Secret{Value: []byte(key + "=" + strconv.Itoa(v)), Version: strconv.Itoa(v)}
	}
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return resolver.Secret{}, ctx.Err()
		}
	}
	return sec, err
}

// healthy is a scripted provider with a health call of its own.
type healthy struct{ *scripted }

func (h healthy) CheckHealth(ctx context.Context) error {
	h.health.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return fmt.Errorf("sealed: %w", resolver.ErrUnavailable)
	}
	return nil
}

// dirs is a scripted provider that lists: "" holds its keys; every other
// directory is empty.
type dirs struct {
	*scripted
	lists atomic.Int64
}

func (d *dirs) List(ctx context.Context, dir string) ([]string, error) {
	d.lists.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		return nil, errRefused
	}
	if dir != "" {
		return nil, nil
	}
	var out []string
	for k := range d.vals {
		out = append(out, k)
	}
	return out, nil
}

func read(c *cache.Cache, provider, k string) (string, time.Duration, error) {
	v, err := c.Get(context.Background(), resolver.Reference{Provider: provider, Key: k})
	return string(v.Value), v.FreshFor, err
}

// Failure 1: one failing key took its whole provider down; its other keys
// were served stale and not refreshed.
func TestOneKeyFailureKeepsItsProviderUp(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    resolver.Provider
		s    *scripted
	}{
		{"a witness key confirms", nil, newScripted("x")},
		{"the health call confirms", nil, newScripted("x")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var p resolver.Provider = tt.s
			if tt.name == "the health call confirms" {
				p = healthy{tt.s}
			}
			clk := newClock()
			c := newCache(t, clk, cache.Options{TTL: time.Second, MaxStale: time.Hour, ProbeMin: time.Second, ProbeMax: 8 * time.Second}, p)
			for _, k := range []string{"good", "other", "bad"} {
				tt.s.set(k, 1)
				if _, _, err := read(c, "x", k); err != nil {
					t.Fatal(err)
				}
			}
			tt.s.fail("bad", fmt.Errorf("exit 1: %w", resolver.ErrUnavailable))
			clk.Advance(2 * time.Second)
			if got, fresh, err := read(c, "x", "bad"); err != nil || got != "bad=1" || fresh != 0 {
				t.Fatalf("the failing key = %q (fresh for %v), %v; want its last value, stale", got, fresh, err)
			}
			c.WaitIdle() // the confirmation that the provider answers
			if c.Down("x") {
				t.Fatal("one key's failure marked its provider down")
			}
			// The healthy key changes and is read fresh, at once.
			tt.s.set("good", 2)
			if got, fresh, err := read(c, "x", "good"); err != nil || got != "good=2" || fresh == 0 {
				t.Errorf("a healthy key = %q (fresh for %v), %v; want good=2 fresh", got, fresh, err)
			}
			// The failing key backs off on its own: no call within a
			// second, one after it, then two seconds.
			before := tt.s.callsOf("bad")
			for range 3 {
				read(c, "x", "bad")
			}
			c.WaitIdle()
			if n := tt.s.callsOf("bad") - before; n != 0 {
				t.Errorf("calls for the failing key within its back-off = %d, want 0", n)
			}
			clk.Advance(time.Second)
			read(c, "x", "bad")
			c.WaitIdle()
			if n := tt.s.callsOf("bad") - before; n != 1 {
				t.Errorf("calls for the failing key after its back-off = %d, want 1 (the retry)", n)
			}
			tt.s.fail("bad", nil)
			tt.s.set("bad", 3)
			clk.Advance(2 * time.Second)
			if got, fresh, err := read(c, "x", "bad"); err != nil || got != "bad=3" || fresh == 0 {
				t.Errorf("the key once it answers = %q (fresh for %v), %v; want bad=3 fresh", got, fresh, err)
			}
			if h := c.Health()["x"]; !h.Up {
				t.Errorf("health = %+v, want up", h)
			}
			if tt.name == "the health call confirms" && tt.s.health.Load() == 0 {
				t.Error("the health call was never made")
			}
		})
	}
}

// A failing key with no value fails at once during its back-off, and does
// not mark its provider down either.
func TestFailingKeyWithoutValueBacksOff(t *testing.T) {
	clk := newClock()
	s := newScripted("x")
	s.set("good", 1)
	c := newCache(t, clk, cache.Options{ProbeMin: time.Second}, s)
	read(c, "x", "good")
	s.fail("new", fmt.Errorf("HTTP 500: %w", resolver.ErrUnavailable))
	for range 3 {
		if _, _, err := read(c, "x", "new"); !errors.Is(err, resolver.ErrUnavailable) {
			t.Fatalf("failing key = %v, want ErrUnavailable", err)
		}
	}
	if n := s.callsOf("new"); n != 1 {
		t.Errorf("calls = %d, want 1 (then its back-off)", n)
	}
	if c.Down("x") {
		t.Error("provider marked down by one key")
	}
	clk.Advance(time.Second)
	read(c, "x", "new")
	if n := s.callsOf("new"); n != 2 {
		t.Errorf("calls after the back-off = %d, want 2", n)
	}
}

// The backend down: the first reader waits for the confirmation, every
// read after it knows.
func TestOutageIsConfirmedThenKnown(t *testing.T) {
	for _, withHealth := range []bool{false, true} {
		t.Run(fmt.Sprint("health call ", withHealth), func(t *testing.T) {
			clk := newClock()
			s := newScripted("x")
			var p resolver.Provider = s
			if withHealth {
				p = healthy{s}
			}
			c := newCache(t, clk, cache.Options{TTL: time.Second, MaxStale: time.Hour}, p)
			for _, k := range []string{"a", "b"} {
				s.set(k, 1)
				read(c, "x", k)
			}
			clk.Advance(2 * time.Second)
			s.setDown(true)
			if got, _, err := read(c, "x", "a"); err != nil || got != "a=1" {
				t.Fatalf("first read in the outage = %q, %v; want stale a=1", got, err)
			}
			c.WaitIdle() // the confirmation runs in the background
			if !c.Down("x") {
				t.Fatal("not marked down after a confirmed outage")
			}
			if withHealth && s.health.Load() != 1 {
				t.Errorf("health calls = %d, want 1", s.health.Load())
			}
			if !withHealth && s.callsOf("b") != 2 {
				t.Errorf("calls of the witness b = %d, want 2 (its read, the confirmation)", s.callsOf("b"))
			}
			s.setDown(false)
			clk.Advance(time.Second) // the probe
			c.WaitIdle()
			if c.Down("x") {
				t.Error("still down after the probe got an answer")
			}
		})
	}
}

// Failure 3: an uncached read during a known outage waited --timeout.
func TestUncachedReadDuringKnownOutageFailsAtOnce(t *testing.T) {
	clk := newClock()
	s := newScripted("x")
	s.set("a", 1)
	s.set("b", 1)
	c := newCache(t, clk, cache.Options{TTL: time.Second, MaxStale: time.Hour, Deadlines: resolver.Deadlines{Call: 5 * time.Second}}, s)
	read(c, "x", "a")
	read(c, "x", "b")
	clk.Advance(2 * time.Second)
	s.setDown(true)
	read(c, "x", "a") // finds the outage
	c.WaitIdle()
	if !c.Down("x") {
		t.Fatal("not down")
	}
	hang := make(chan struct{})
	defer close(hang)
	s.setHold(hang) // a call now would take the whole budget
	for _, k := range []string{"new1", "new2", "new3"} {
		start := time.Now()
		_, _, err := read(c, "x", k)
		if d := time.Since(start); !errors.Is(err, resolver.ErrUnavailable) || d > 100*time.Millisecond {
			t.Errorf("uncached %s during a known outage: %v after %v; want ErrUnavailable within 100ms", k, err, d)
		}
		if n := s.callsOf(k); n != 0 {
			t.Errorf("calls for %s = %d, want 0", k, n)
		}
	}
}

// Failure 5: a prefetch waited on a provider known to be down.
func TestPrefetchDuringKnownOutageReturnsAtOnce(t *testing.T) {
	clk := newClock()
	bb := &batchBackend{backend: backend{value: "v"}}
	c := newCache(t, clk, cache.Options{TTL: time.Second, MaxStale: time.Hour, Deadlines: resolver.Deadlines{Call: 5 * time.Second}}, bb)
	get(t, c, "a")
	get(t, c, "b")
	clk.Advance(2 * time.Second)
	bb.set("", errRefused)
	get(t, c, "a")
	c.WaitIdle()
	if !c.Down("b") {
		t.Fatal("not down")
	}
	start := time.Now()
	err := c.Prefetch(context.Background(), "b", []string{"x", "y"})
	if d := time.Since(start); !errors.Is(err, resolver.ErrUnavailable) || d > 100*time.Millisecond || len(bb.batches) != 0 {
		t.Errorf("prefetch during an outage: %v after %v, %d batches; want ErrUnavailable at once, no batch", err, d, len(bb.batches))
	}
}

// rotateDuringCall starts a read of k (at version 1) whose call waits for
// release, and rotates k to version 2 while that call is under way; later
// calls do not wait. It returns what that read gets.
func rotateDuringCall(t *testing.T, s *scripted, c *cache.Cache, k string) (<-chan string, func()) {
	t.Helper()
	hold := make(chan struct{})
	s.setHold(hold)
	got := make(chan string, 1)
	go func() { v, _, _ := read(c, s.name, k); got <- v }()
	waitFor(t, "the first call begins", func() bool { return s.callsOf(k) == 1 })
	s.set(k, 2)
	s.setHold(nil)
	return got, func() { close(hold) }
}

// Failure 4: a refresh joined a call already in flight and stored the
// value from before the change.
func TestRefreshStoresTheNewValue(t *testing.T) {
	clk := newClock()
	s := newScripted("x")
	s.set("k", 1)
	c := newCache(t, clk, cache.Options{TTL: time.Minute}, s)
	old, release := rotateDuringCall(t, s, c, "k")
	if err := c.Refresh(context.Background(), resolver.Reference{Provider: "x", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := read(c, "x", "k"); got != "k=2" {
		t.Fatalf("after refresh = %q, want k=2", got)
	}
	release() // the older call ends last
	if got := <-old; got != "k=2" {
		t.Errorf("the reader of the older call got %q, want the newer k=2 (never older than one served)", got)
	}
	if got, _, _ := read(c, "x", "k"); got != "k=2" {
		t.Errorf("after the older call ended = %q, want k=2 (an older call never replaces a newer answer)", got)
	}
}

// Failure 4: a refresh that failed during an outage dropped the good value.
func TestRefreshDuringOutageKeepsTheValue(t *testing.T) {
	clk := newClock()
	s := newScripted("x")
	s.set("k", 1)
	c := newCache(t, clk, cache.Options{TTL: time.Minute, MaxStale: time.Hour}, s)
	read(c, "x", "k")
	s.setDown(true)
	err := c.Refresh(context.Background(), resolver.Reference{Provider: "x", Key: "k"})
	if !errors.Is(err, resolver.ErrUnavailable) {
		t.Fatalf("refresh in an outage = %v, want ErrUnavailable", err)
	}
	clk.Advance(2 * time.Minute)
	if got, _, err := read(c, "x", "k"); err != nil || got != "k=1" {
		t.Errorf("read after a failed refresh = %q, %v; want the stale k=1", got, err)
	}
}

// Expire (a refresh of a directory) keeps good values for an outage.
func TestExpireKeepsValuesForAnOutage(t *testing.T) {
	clk := newClock()
	s := newScripted("x")
	s.set("d/k", 1)
	s.set("w", 1)
	c := newCache(t, clk, cache.Options{TTL: time.Minute, MaxStale: time.Hour}, s)
	read(c, "x", "d/k")
	read(c, "x", "w")
	var changes []cache.Change
	c.OnChange(func(ch cache.Change) { changes = append(changes, ch) })
	c.Expire("x", "d")
	if len(changes) != 1 || changes[0].Ref.Key != "d/k" || changes[0].Deleted {
		t.Errorf("changes = %+v, want d/k told (not deleted)", changes)
	}
	s.setDown(true)
	if got, _, err := read(c, "x", "d/k"); err != nil || got != "d/k=1" {
		t.Errorf("read after Expire in an outage = %q, %v; want the stale value", got, err)
	}
	s.setDown(false)
	s.set("d/k", 2)
	clk.Advance(time.Minute) // the probe, then the value is read again
	c.WaitIdle()
	if got, _, err := read(c, "x", "d/k"); err != nil || got != "d/k=2" {
		t.Errorf("after the outage = %q, %v; want d/k=2", got, err)
	}
}

// An older prefetch's answer never replaces a value a newer call stored.
func TestOlderPrefetchNeverReplacesNewerValue(t *testing.T) {
	clk := newClock()
	sb := &slowBatch{scripted: newScripted("x"), gate: make(chan struct{})}
	sb.set("k", 1)
	c := newCache(t, clk, cache.Options{TTL: time.Minute}, sb)
	done := make(chan error, 1)
	go func() { done <- c.Prefetch(context.Background(), "x", []string{"k"}) }()
	waitFor(t, "the batch begins", func() bool { return sb.began.Load() })
	sb.set("k", 2)
	if got, _, _ := read(c, "x", "k"); got != "k=2" {
		t.Fatalf("read = %q, want k=2", got)
	}
	close(sb.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, _, _ := read(c, "x", "k"); got != "k=2" {
		t.Errorf("after the older batch = %q, want k=2", got)
	}
}

type slowBatch struct {
	*scripted
	gate  chan struct{}
	began atomic.Bool
}

func (b *slowBatch) GetBatch(ctx context.Context, keys []string) (map[string]resolver.Secret, error) {
	out := make(map[string]resolver.Secret)
	for _, k := range keys {
		if s, err := b.Get(ctx, k, ""); err == nil {
			out[k] = s
		}
	}
	b.began.Store(true)
	<-b.gate
	return out, nil
}

// Failure 2: a flood of missing names grew memory without bound and the
// empty listings below them evicted values.
func TestFloodOfMissingNamesIsBounded(t *testing.T) {
	clk := newClock()
	d := &dirs{scripted: newScripted("x")}
	for i := range 20 {
		d.set(fmt.Sprint("k", i), 1)
	}
	c := newCache(t, clk, cache.Options{TTL: time.Hour, MaxStale: time.Hour, MaxEntries: 20, MaxNegative: 1000}, d)
	d.noCount = true
	for i := range 20 {
		read(c, "x", fmt.Sprint("k", i))
	}
	flood := func(from, to int) {
		for i := from; i < to; i++ {
			name := fmt.Sprint("nope", i)
			read(c, "x", name)
			c.List(context.Background(), "x", name)         // what a lookup asks below a missing name
			c.Probe(context.Background(), "x", name+"/sub") // cannot probe: known from the type
		}
	}
	flood(0, 30)
	if values, _ := c.Len(); values != 20 {
		t.Fatalf("values after 30 missing names = %d, want 20 (none evicted)", values)
	}
	flood(30, 3000)
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	flood(3000, 13000)
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	values, negatives := c.Len()
	if values != 20 || negatives != 1000 {
		t.Errorf("held %d values, %d negatives; want 20 and 1000", values, negatives)
	}
	if grew := int64(m1.HeapAlloc) - int64(m0.HeapAlloc); grew > 1<<20 {
		t.Errorf("heap grew %d bytes over 10,000 more missing names; want bounded (< 1 MiB)", grew)
	}
	// The values are all still served without a call, even in an outage.
	d.setDown(true)
	clk.Advance(2 * time.Hour)
	for i := range 20 {
		if got, _, err := read(c, "x", fmt.Sprint("k", i)); err != nil || got != fmt.Sprint("k", i, "=1") {
			t.Fatalf("k%d in an outage after the flood = %q, %v; want it stale", i, got, err)
		}
	}
}

// A reader with nothing to serve who finds an outage waits for its
// confirmation: every read after it knows.
func TestDiscovererWithNothingToServeWaitsForTheConfirmation(t *testing.T) {
	clk := newClock()
	s := newScripted("x")
	s.set("w", 1)
	c := newCache(t, clk, cache.Options{}, s)
	read(c, "x", "w")
	s.setDown(true)
	if _, _, err := read(c, "x", "new"); !errors.Is(err, resolver.ErrUnavailable) {
		t.Fatalf("uncached read in an outage = %v, want ErrUnavailable", err)
	}
	if !c.Down("x") {
		t.Error("the read that found the outage returned before it was confirmed")
	}
	if n := s.callsOf("w"); n != 2 {
		t.Errorf("calls of the witness = %d, want 2 (its read, the confirmation)", n)
	}
}

// Review: a witness that fails alone, then another key's blip, marked the
// provider down for good: the probe only asked the broken witness.
func TestWitnessThatFailsAloneCannotKeepTheProviderDown(t *testing.T) {
	clk := newClock()
	s := newScripted("x")
	for _, k := range []string{"a", "b", "c"} {
		s.set(k, 1)
	}
	c := newCache(t, clk, cache.Options{TTL: time.Second, MaxStale: time.Hour, ProbeMin: time.Second, ProbeMax: 4 * time.Second}, s)
	read(c, "x", "b")
	read(c, "x", "a") // witnesses: a, b
	s.fail("a", fmt.Errorf("exit 1: %w", resolver.ErrUnavailable))
	clk.Advance(2 * time.Second)
	read(c, "x", "a") // a fails alone: b answers, so a is no witness now
	c.WaitIdle()
	s.fail("b", fmt.Errorf("blip: %w", resolver.ErrUnavailable))
	read(c, "x", "b") // no witness left to confirm with: b's own failure
	c.WaitIdle()
	if c.Down("x") {
		t.Fatal("a witness that fails alone confirmed another key's blip as an outage")
	}
	s.fail("b", nil)
	if got, _, err := read(c, "x", "c"); err != nil || got != "c=1" {
		t.Errorf("a healthy uncached key = %q, %v; want c=1", got, err)
	}
}

// Review: even when an outage is confirmed by keys that later fail alone,
// the probe asks for a key a read wanted, and the outage ends.
func TestProbeAsksForAWantedKey(t *testing.T) {
	clk := newClock()
	s := newScripted("x")
	for _, k := range []string{"a", "b", "c"} {
		s.set(k, 1)
	}
	c := newCache(t, clk, cache.Options{TTL: time.Second, MaxStale: time.Hour, ProbeMin: time.Second, ProbeMax: 4 * time.Second}, s)
	read(c, "x", "a")
	read(c, "x", "b")
	clk.Advance(2 * time.Second)
	s.setDown(true)
	read(c, "x", "a")
	c.WaitIdle()
	if !c.Down("x") {
		t.Fatal("not down")
	}
	// The backend comes back, but a and b now fail alone.
	s.setDown(false)
	s.fail("a", errRefused)
	s.fail("b", errRefused)
	if _, _, err := read(c, "x", "c"); !errors.Is(err, resolver.ErrUnavailable) {
		t.Fatalf("read while down = %v, want ErrUnavailable at once", err)
	}
	clk.Advance(time.Second) // the probe
	c.WaitIdle()
	if c.Down("x") {
		t.Fatal("still down: the probe did not ask for the key a read wanted")
	}
	if got, _, err := read(c, "x", "c"); err != nil || got != "c=1" {
		t.Errorf("after the outage = %q, %v; want c=1", got, err)
	}
}

// Review: a refresh of a directory (Expire) lost to a call already in
// flight, whose older answer was stored fresh for a whole TTL.
func TestExpireWinsOverACallInFlight(t *testing.T) {
	clk := newClock()
	s := newScripted("x")
	s.set("d/k", 1)
	c := newCache(t, clk, cache.Options{TTL: time.Hour}, s)
	old, release := rotateDuringCall(t, s, c, "d/k")
	c.Expire("x", "d")
	if got, _, _ := read(c, "x", "d/k"); got != "d/k=2" {
		t.Errorf("a read after Expire = %q, want d/k=2 (it joins no call that began before)", got)
	}
	release()
	<-old
	if got, fresh, _ := read(c, "x", "d/k"); got != "d/k=2" {
		t.Errorf("after the older call ended = %q (fresh for %v), want d/k=2", got, fresh)
	}
}

// Review: a failed read-ahead never marked its provider down and was made
// again by every ls.
func TestFailedPrefetchConfirmsAndBacksOff(t *testing.T) {
	clk := newClock()
	fb := &failingBatch{scripted: newScripted("x")}
	fb.set("a", 1)
	fb.set("b", 1)
	c := newCache(t, clk, cache.Options{TTL: time.Second, ProbeMin: time.Second}, fb)
	read(c, "x", "a")
	read(c, "x", "b")
	clk.Advance(2 * time.Second)
	fb.setDown(true)
	if err := c.Prefetch(context.Background(), "x", []string{"a", "b"}); !errors.Is(err, resolver.ErrUnavailable) {
		t.Fatalf("prefetch = %v, want ErrUnavailable", err)
	}
	c.WaitIdle()
	if !c.Down("x") {
		t.Error("a failed batch did not have the outage confirmed")
	}
	fb.setDown(false)
	clk.Advance(time.Second) // the probe ends the outage
	c.WaitIdle()
	fb.batchErr = errRefused
	for range 3 {
		c.Prefetch(context.Background(), "x", []string{"a", "b"})
		c.WaitIdle()
	}
	if n := fb.batches.Load(); n != 2 {
		t.Errorf("batches = %d, want 2 (the first failure, one more; then a back-off)", n)
	}
}

type failingBatch struct {
	*scripted
	batchErr error
	batches  atomic.Int64
}

func (f *failingBatch) GetBatch(ctx context.Context, keys []string) (map[string]resolver.Secret, error) {
	f.batches.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errRefused
	}
	return nil, f.batchErr
}

// Review: long names chosen by a local user made each negative entry cost
// 115 KB; the negatives are bounded in bytes too.
func TestLongMissingNamesAreBoundedInBytes(t *testing.T) {
	clk := newClock()
	s := newScripted("x")
	s.noCount = true
	c := newCache(t, clk, cache.Options{MaxNegativeBytes: 1 << 20}, s)
	long := strings.Repeat("n", 4000)
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := range 2000 {
		read(c, "x", fmt.Sprint(long, i))
	}
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	if _, negatives := c.Len(); negatives > 1<<20/4000 {
		t.Errorf("negatives held = %d, want at most %d within 1 MiB", negatives, 1<<20/4000)
	}
	if grew := int64(m1.HeapAlloc) - int64(m0.HeapAlloc); grew > 4<<20 {
		t.Errorf("heap grew %d bytes, want bounded near 1 MiB", grew)
	}
	if _, _, err := read(c, "x", strings.Repeat("n", resolver.MaxKeyLen+1)); !errors.Is(err, resolver.ErrInvalidReference) {
		t.Errorf("a key past MaxKeyLen = %v, want ErrInvalidReference", err)
	}
}
