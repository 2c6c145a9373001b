package cache_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// locker is a cache.Locker that remembers its copies, and fails while full.
type locker struct {
	mu     sync.Mutex
	copies []*byte // guarded by mu; the first byte of every copy made
	full   bool    // guarded by mu
}

type hold struct{ n int }

func (l *locker) Copy(b []byte) ([]byte, any, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.full {
		return nil, nil, errors.New("no locked memory left")
	}
	c := bytes.Clone(b)
	l.copies = append(l.copies, &c[0])
	return c, &hold{len(l.copies)}, nil
}

func (l *locker) made(v []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.copies {
		if len(v) > 0 && p == &v[0] {
			return true
		}
	}
	return false
}

// With a Locker, what the cache keeps and what it cuts are the Locker's
// copies, each with its hold; a value that finds no locked memory fails
// its read, keeps the last good value served, and does not make the
// provider look down.
func TestLockerKeepsEveryValue(t *testing.T) {
	clk := newClock()
	b := &jsonBackend{}
	l := &locker{}
	c := newCache(t, clk, cache.Options{TTL: time.Minute, MaxStale: time.Hour, Locker: l}, b)
	ctx := context.Background()
	for _, ref := range []resolver.Reference{{Provider: "j", Key: "k"}, {Provider: "j", Key: "k", Field: "b"}} {
		v, err := c.Get(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if !l.made(v.Value) || v.Hold == nil {
			t.Errorf("%s: %q is not the locker's copy (hold %v)", ref, v.Value, v.Hold)
		}
	}
	if _, err := c.Get(ctx, resolver.Reference{Provider: "j", Key: "k", Field: "b"}); err != nil {
		t.Fatal(err)
	}
	if got := len(l.copies); got != 2 {
		t.Errorf("copies = %d, want 2: the value once, and the field cut once, however often it is read", got)
	}

	l.mu.Lock()
	l.full = true
	l.mu.Unlock()
	clk.Advance(time.Minute)
	v, err := c.Get(ctx, resolver.Reference{Provider: "j", Key: "k"})
	if err != nil || !v.Stale || !l.made(v.Value) {
		t.Errorf("with no locked memory: %q stale=%v, %v; want the last good value, stale", v.Value, v.Stale, err)
	}
	if c.Down("j") {
		t.Error("the provider looks down because no memory could be locked")
	}
	_, err = c.Get(ctx, resolver.Reference{Provider: "j", Key: "other"})
	if kind := resolver.KindOf(err); err == nil || kind != resolver.KindUnknown {
		t.Errorf("a new key with no locked memory: %v (kind %v), want an error of no known kind (EIO)", err, kind)
	}
}
