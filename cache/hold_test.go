package cache_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// A held key is refreshed ahead though nobody reads it (a watched file):
// its change is reported within a TTL, a failed refresh is tried again,
// and once released it costs nothing more.
func TestHeldKeyIsKeptFreshWithoutReads(t *testing.T) {
	clk := newClock()
	b := &backend{value: "v1"}
	c := newCache(t, clk, cache.Options{TTL: 100 * time.Second, ProbeMin: time.Second, ProbeMax: 4 * time.Second}, b)
	var (
		mu      sync.Mutex
		changes []cache.Change
	)
	c.OnChange(func(ch cache.Change) { mu.Lock(); changes = append(changes, ch); mu.Unlock() })
	changed := func() int { mu.Lock(); defer mu.Unlock(); return len(changes) }

	ref := resolver.Reference{Provider: "b", Key: "k", Field: "ignored"}
	if _, err := get(t, c, "k"); err != nil {
		t.Fatal(err)
	}
	release := c.Hold(ref)
	if got, want := c.Held(), 1; got != want {
		t.Fatalf("held = %d, want %d", got, want)
	}

	// Ten TTLs with no read: one call per 75 s of freshness.
	for range 100 {
		clk.Advance(10 * time.Second)
		c.WaitIdle()
	}
	if got := c.Stats().Refreshes; got < 12 || got > 14 {
		t.Errorf("refreshes of a held key over 1000 s = %d, want about one per 75 s (12 to 14)", got)
	}

	// A change is reported within the TTL, with no read.
	b.set("v2", nil)
	for range 10 {
		clk.Advance(10 * time.Second)
		c.WaitIdle()
	}
	if got, want := changed(), 1; got != want {
		t.Fatalf("changes = %d within a TTL of the backend's change, want %d", got, want)
	}

	// The backend fails: the refresh is tried again (with back-off) and
	// the change that follows the failure is still heard.
	b.set("", resolver.Unavailable(errors.New("blip")))
	for range 10 {
		clk.Advance(10 * time.Second)
		c.WaitIdle()
	}
	failing := b.calls.Load()
	b.set("v3", nil)
	for range 10 {
		clk.Advance(10 * time.Second)
		c.WaitIdle()
	}
	if got, want := changed(), 2; got != want {
		t.Fatalf("changes = %d after a failed refresh and a new value, want %d (calls while failing: %d)", got, want, failing)
	}

	// Released (twice: idempotent), it costs nothing.
	release()
	release()
	if got, want := c.Held(), 0; got != want {
		t.Fatalf("held after release = %d, want %d", got, want)
	}
	clk.Advance(100 * time.Second) // the last timer armed while held
	c.WaitIdle()
	calls := b.calls.Load()
	for range 50 {
		clk.Advance(10 * time.Second)
		c.WaitIdle()
	}
	if got := b.calls.Load(); got != calls {
		t.Errorf("calls after release = %d, want %d: a key nobody holds or reads costs nothing", got, calls)
	}
}

// A key held after its refresh was due (nobody read it meanwhile) is
// refreshed at once: the hold comes when a file is found to be watched.
func TestHoldAfterTheRefreshWasDue(t *testing.T) {
	clk := newClock()
	b := &backend{value: "v1"}
	c := newCache(t, clk, cache.Options{TTL: 100 * time.Second}, b)
	if _, err := get(t, c, "k"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(90 * time.Second) // past the refresh ahead, unread: no call
	c.WaitIdle()
	if got, want := b.calls.Load(), int64(1); got != want {
		t.Fatalf("calls before the hold = %d, want %d", got, want)
	}
	release := c.Hold(resolver.Reference{Provider: "b", Key: "k"})
	defer release()
	c.WaitIdle()
	if got, want := b.calls.Load(), int64(2); got != want {
		t.Errorf("calls after the hold = %d, want %d (a refresh at once)", got, want)
	}
}

// A held key is never evicted by reads of others, and a key held before it
// was ever fetched (or while it fails) is fetched, and its change heard.
func TestHeldKeysSurviveEvictionAndAreFetched(t *testing.T) {
	clk := newClock()
	b := &backend{value: "v1"}
	c := newCache(t, clk, cache.Options{TTL: 100 * time.Second, MaxEntries: 2, ProbeMin: time.Second, ProbeMax: 4 * time.Second}, b)
	var (
		mu      sync.Mutex
		changes int
	)
	c.OnChange(func(cache.Change) { mu.Lock(); changes++; mu.Unlock() })

	held := resolver.Reference{Provider: "b", Key: "held"}
	release := c.Hold(held) // never fetched: fetched now
	defer release()
	c.WaitIdle()
	if got, want := b.calls.Load(), int64(1); got != want {
		t.Fatalf("calls after holding a key never fetched = %d, want %d", got, want)
	}
	for i := range 5 {
		if _, err := get(t, c, fmt.Sprintf("other%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b.set("v2", nil)
	for range 10 {
		clk.Advance(10 * time.Second)
		c.WaitIdle()
	}
	mu.Lock()
	defer mu.Unlock()
	if changes != 1 {
		t.Errorf("changes of a held key after five reads of others with room for two = %d, want 1", changes)
	}
}
