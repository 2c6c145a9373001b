package cache_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// twoValues answers v1, then v2 (with a MaxAge if leased, with notAfter
// and lease if set); gate holds a call back; down fails every call.
type twoValues struct {
	mu       sync.Mutex
	gate     chan struct{}
	n        int
	down     bool
	leased   bool
	notAfter time.Time
	lease    *resolver.Lease
	calls    atomic.Int64
}

func (f *twoValues) Name() string { return "p" }

func (f *twoValues) setDown() {
	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
}

func (f *twoValues) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	f.calls.Add(1)
	f.mu.Lock()
	g := f.gate
	f.mu.Unlock()
	if g != nil {
		<-g
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return resolver.Secret{}, resolver.ErrUnavailable
	}
	f.n++
	if f.n == 1 {
		return resolver.Secret{Value: []byte("v1")}, nil
	}
	s := resolver.Secret{Value: []byte("v2"), NotAfter: f.notAfter, Lease: f.lease}
	if f.leased {
		s.MaxAge = 10 * time.Second
	}
	return s, nil
}

// A call that began before an Expire was returned to its readers but not
// kept, and a later stale read went back to the older value the Expire
// kept. That call's value is now the last good one (expired), unless it
// has a lease, which no read may serve past its end.
func TestCallBeforeAnExpireIsTheLastGoodValue(t *testing.T) {
	for _, tt := range []struct {
		leased bool
		want   string
	}{{false, "v2"}, {true, "v1"}} {
		t.Run(map[bool]string{false: "no lease", true: "a lease"}[tt.leased], func(t *testing.T) {
			clk := newClock()
			f := &twoValues{leased: tt.leased}
			c := newCache(t, clk, cache.Options{TTL: time.Minute, MaxStale: time.Hour}, f)
			ref := resolver.Reference{Provider: "p", Key: "k"}
			if v, err := c.Get(context.Background(), ref); err != nil || string(v.Value) != "v1" {
				t.Fatal(v, err)
			}
			clk.Advance(2 * time.Minute)
			f.mu.Lock()
			f.gate = make(chan struct{})
			g := f.gate
			f.mu.Unlock()
			done := make(chan string)
			go func() {
				v, _ := c.Get(context.Background(), ref)
				done <- string(v.Value)
			}()
			waitFor(t, "the second call", func() bool { return f.calls.Load() == 2 })
			c.Expire("p", "")
			f.mu.Lock()
			f.gate = nil
			f.mu.Unlock()
			close(g)
			if got := <-done; got != "v2" {
				t.Fatalf("the call's reader got %q, want v2", got)
			}
			clk.Advance(10 * time.Minute)
			f.mu.Lock()
			f.down = true
			f.mu.Unlock()
			v, err := c.Get(context.Background(), ref)
			if err != nil || string(v.Value) != tt.want || !v.Stale {
				t.Errorf("with the backend down: %q (stale %v), %v; want %s served stale", v.Value, v.Stale, err, tt.want)
			}
		})
	}
}
