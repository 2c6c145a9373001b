package cache_test

// A randomized model test of the engine: a scheduler scripts a world (values
// change, keys are deleted, single keys fail, a backend goes down and up, the
// fake clock moves) while many readers read concurrently; every answer is
// checked against what the world was, in fake time:
//
//   - a value read fresh was current at most TTL before the read began;
//   - a value read stale was current at most TTL+MaxStale before, and its key
//     or its provider was failing at most ProbeMax before;
//   - a not-found answer was true at most NegativeTTL before;
//   - an unavailable answer, like a stale one, needs a failure of the key or
//     of its provider;
//   - a read that begins after another returned never gets a value of an
//     older call (Value.Gen);
//
// and the scheduler also refreshes keys and expires whole providers, as
// `secretfs refresh` does.
//
// So a single key's failure never changes another key's answers, since only
// the key's own failures (or its provider's) allow a stale or failed answer,
// with one exception: while a key's unavailable answer is being confirmed
// as its provider's (one call in the background), the provider's expired
// values are served stale at once. In the model a confirmation ends before
// time moves, so that is allowed at the instant another key of the
// provider fails, never after.
//
// Fake time moves only while no read, call or background task is under way
// (a read-write lock: readers share it, the scheduler takes it to move
// time), so a call reads the world and stores its answer at one instant.
// The world alternates per provider between healthy stretches (single keys
// fail, the backend stays up) and flaky ones (it also goes down and up).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

const (
	modelTTL         = 4 * time.Second
	modelNegativeTTL = 2 * time.Second
	modelMaxStale    = 30 * time.Second
	modelProbeMax    = 4 * time.Second
	modelMaxStep     = 1500 * time.Millisecond
	modelSteps       = 2000
	modelRegime      = 200 // steps between changes of a provider's stretch
	modelReaders     = 8
	modelKeys        = 6
)

func TestModel(t *testing.T) {
	seeds := []uint64{1, uint64(time.Now().UnixNano())}
	if s := os.Getenv("SECRETFS_MODEL_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SECRETFS_MODEL_SEED: %v", err)
		}
		seeds = []uint64{n}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { runModel(t, seed) })
	}
}

// span is a time the world was in some state: [from, to), to zero while it
// lasts.
type span struct{ from, to time.Time }

func (s span) meets(from, to time.Time) bool {
	return !s.from.After(to) && (s.to.IsZero() || !s.to.Before(from))
}

// version is one state of a key: a value, or deleted.
type version struct {
	n       int
	deleted bool
	span
}

// world is what the backends hold, with its history in fake time.
type world struct {
	clk   *clock
	provs map[string]*scripted
	mu    sync.Mutex
	hist  map[string][]version // guarded by mu; "p/k"
	fails map[string][]span    // guarded by mu; "p/k" a key failing alone, "p" the provider down
}

func (w *world) now() time.Time { return w.clk.Now() }

func (w *world) setValue(p, k string, n int, deleted bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	id := p + "/" + k
	if h := w.hist[id]; len(h) > 0 {
		h[len(h)-1].to = now
	}
	w.hist[id] = append(w.hist[id], version{n: n, deleted: deleted, span: span{from: now}})
	s := w.provs[p]
	s.mu.Lock()
	if deleted {
		delete(s.vals, k)
	} else {
		s.vals[k] = n
	}
	s.mu.Unlock()
}

// setFailing starts or ends a failure: of key k, or of the provider (k "").
func (w *world) setFailing(p, k string, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := p
	if k != "" {
		id += "/" + k
	}
	now := w.now()
	if on {
		w.fails[id] = append(w.fails[id], span{from: now})
	} else if f := w.fails[id]; len(f) > 0 && f[len(f)-1].to.IsZero() {
		f[len(f)-1].to = now
	}
	s := w.provs[p]
	if k == "" {
		s.setDown(on)
	} else if on {
		s.fail(k, fmt.Errorf("exit 1: %w", resolver.ErrUnavailable))
	} else {
		s.fail(k, nil)
	}
}

// failing reports whether key k of p, or p, failed at some time in
// [from, to].
func (w *world) failing(p, k string, from, to time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range []string{p, p + "/" + k} {
		for _, s := range w.fails[id] {
			if s.meets(from, to) {
				return true
			}
		}
	}
	return false
}

// anyKeyFailing reports whether some key of p failed alone at some time
// in [from, to].
func (w *world) anyKeyFailing(p string, from, to time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, spans := range w.fails {
		if !strings.HasPrefix(id, p+"/") {
			continue
		}
		for _, s := range spans {
			if s.meets(from, to) {
				return true
			}
		}
	}
	return false
}

// lookup returns the state of p/k with value n, or whether some deleted
// state meets [from, to].
func (w *world) value(p, k string, n int) (version, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range w.hist[p+"/"+k] {
		if !v.deleted && v.n == n {
			return v, true
		}
	}
	return version{}, false
}

func (w *world) deletedDuring(p, k string, from, to time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range w.hist[p+"/"+k] {
		if v.deleted && v.meets(from, to) {
			return true
		}
	}
	return false
}

// slow is a scripted provider whose calls are sometimes slow (in real
// time), so that readers pile up behind calls and calls overlap.
type slow struct{ *scripted }

func (s slow) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	if rand.IntN(4) == 0 {
		time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
	}
	return s.scripted.Get(ctx, key, version)
}

type slowHealthy struct{ slow }

func (s slowHealthy) CheckHealth(ctx context.Context) error {
	return healthy{s.scripted}.CheckHealth(ctx)
}

func runModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x5ec7))
	clk := newClock()
	var gate sync.RWMutex // readers share it; the scheduler holds it to move time
	w := &world{clk: clk, provs: map[string]*scripted{"w": newScripted("w"), "h": newScripted("h")},
		hist: make(map[string][]version), fails: make(map[string][]span)}
	for _, s := range w.provs {
		s.noCount = true
	}
	providers := []string{"w", "h"} // w confirms outages with a witness key, h with its health call
	keys := make([]string, modelKeys)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	next := make(map[string]int)
	for _, p := range providers {
		for _, k := range keys {
			next[p+"/"+k] = 1
			w.setValue(p, k, 1, false)
		}
	}
	r, err := resolver.New(slow{w.provs["w"]}, slowHealthy{slow{w.provs["h"]}})
	if err != nil {
		t.Fatal(err)
	}
	var jmu sync.Mutex
	jitter := rand.New(rand.NewPCG(seed, 7))
	c := cache.New(r, cache.Options{
		TTL: modelTTL, NegativeTTL: modelNegativeTTL, MaxStale: modelMaxStale,
		ProbeMin: time.Second, ProbeMax: modelProbeMax, Deadlines: resolver.Deadlines{Call: 2 * time.Second}, Clock: clk,
		Rand: func() float64 { jmu.Lock(); defer jmu.Unlock(); return jitter.Float64() },
	})
	defer c.Close()

	var (
		vmu        sync.Mutex
		violations []string
		lastGen    = make(map[string]uint64) // by "p/k": the largest Gen a finished read got
	)
	violate := func(format string, args ...any) {
		vmu.Lock()
		defer vmu.Unlock()
		if len(violations) < 10 {
			violations = append(violations, fmt.Sprintf(format, args...))
		}
	}
	slack := modelProbeMax
	check := func(p, k string, t0, t1 time.Time, floor uint64, v cache.Value, err error) {
		at := func(tm time.Time) time.Duration { return tm.Sub(newClock().now) }
		id := p + "/" + k
		switch kind := resolver.KindOf(err); kind {
		case resolver.KindOK:
			if v.Gen < floor {
				violate("%s at %v: a value of call %d after one of call %d was returned", id, at(t0), v.Gen, floor)
			}
			n, perr := strconv.Atoi(v.Version)
			st, ok := w.value(p, k, n)
			if perr != nil || !ok {
				violate("%s: version %q never existed", id, v.Version)
				return
			}
			if !v.Stale {
				if !st.to.IsZero() && st.to.Before(t0.Add(-modelTTL)) {
					violate("%s at %v: version %d served fresh, replaced at %v (TTL %v)", id, at(t0), n, at(st.to), modelTTL)
				}
				return
			}
			if !st.to.IsZero() && st.to.Before(t0.Add(-modelTTL-modelMaxStale)) {
				violate("%s at %v: version %d served stale, replaced at %v (past max-stale)", id, at(t0), n, at(st.to))
			}
			if !w.failing(p, k, t0.Add(-slack), t1) && !w.anyKeyFailing(p, t0, t1) {
				violate("%s at %v..%v: version %d served stale while neither the key nor its provider failed", id, at(t0), at(t1), n)
			}
		case resolver.KindNotFound:
			if !w.deletedDuring(p, k, t0.Add(-modelNegativeTTL), t1) {
				violate("%s at %v: not found, but it existed since %v", id, at(t0), at(t0.Add(-modelNegativeTTL)))
			}
		case resolver.KindUnavailable:
			if !w.failing(p, k, t0.Add(-slack), t1) {
				violate("%s at %v..%v: unavailable while neither the key nor its provider failed: %v", id, at(t0), at(t1), err)
			}
		default:
			violate("%s: unexpected error %v", id, err)
		}
	}

	var (
		stop  atomic.Bool
		ops   atomic.Int64
		wg    sync.WaitGroup
		stats = map[resolver.Kind]*atomic.Int64{}
	)
	for _, k := range []resolver.Kind{resolver.KindOK, resolver.KindNotFound, resolver.KindUnavailable} {
		stats[k] = new(atomic.Int64)
	}
	var staleReads atomic.Int64
	for i := range modelReaders {
		rr := rand.New(rand.NewPCG(seed, uint64(i)+100))
		wg.Go(func() {
			for !stop.Load() {
				p, k := providers[rr.IntN(len(providers))], keys[rr.IntN(len(keys))]
				vmu.Lock()
				floor := lastGen[p+"/"+k]
				vmu.Unlock()
				gate.RLock()
				t0 := clk.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				v, err := c.Get(ctx, resolver.Reference{Provider: p, Key: k})
				cancel()
				t1 := clk.Now()
				gate.RUnlock()
				check(p, k, t0, t1, floor, v, err)
				if err == nil {
					vmu.Lock()
					lastGen[p+"/"+k] = max(lastGen[p+"/"+k], v.Gen)
					vmu.Unlock()
					if v.Stale {
						staleReads.Add(1)
					}
				}
				if n := stats[resolver.KindOf(err)]; n != nil {
					n.Add(1)
				}
				ops.Add(1)
				time.Sleep(10 * time.Microsecond) // leave the scheduler a core
			}
		})
	}

	failingKey := map[string]string{} // by provider: the key failing alone, if any
	down := map[string]bool{}
	flaky := map[string]bool{}
	for step := range modelSteps {
		if step%modelRegime == 0 {
			for _, p := range providers {
				flaky[p] = rng.IntN(2) == 0
				if !flaky[p] && down[p] {
					down[p] = false
					w.setFailing(p, "", false)
				}
			}
		}
		p, k := providers[rng.IntN(len(providers))], keys[rng.IntN(len(keys))]
		switch x := rng.IntN(100); {
		case x < 45:
			// Move time while nothing is under way: no read, no call,
			// no background task.
			gate.Lock()
			c.WaitIdle()
			clk.Advance(time.Duration(rng.Int64N(int64(modelMaxStep))))
			c.WaitIdle()
			gate.Unlock()
		case x < 73:
			next[p+"/"+k]++
			w.setValue(p, k, next[p+"/"+k], false)
		case x < 78:
			next[p+"/"+k]++
			w.setValue(p, k, next[p+"/"+k], true)
		case x < 90:
			// One key of a provider fails alone at a time (two witnesses
			// failing alone together would look like an outage).
			if f := failingKey[p]; f != "" {
				w.setFailing(p, f, false)
				failingKey[p] = ""
			} else {
				w.setFailing(p, k, true)
				failingKey[p] = k
			}
		case x < 95:
			// A refresh on request, as `secretfs refresh` makes, of a key
			// or of the whole provider, alongside the readers.
			gate.RLock()
			if x < 94 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c.Refresh(ctx, resolver.Reference{Provider: p, Key: k})
				cancel()
			} else {
				c.Expire(p, "")
			}
			gate.RUnlock()
		default:
			if flaky[p] {
				down[p] = !down[p]
				w.setFailing(p, "", down[p])
			}
		}
		time.Sleep(100 * time.Microsecond)
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("seed %d: %d steps, %d readers, %d reads (%d values of which %d stale, %d not found, %d unavailable)",
		seed, modelSteps, modelReaders, ops.Load(), stats[resolver.KindOK].Load(), staleReads.Load(),
		stats[resolver.KindNotFound].Load(), stats[resolver.KindUnavailable].Load())
	for _, v := range violations {
		t.Errorf("seed %d: %s", seed, v)
	}
}
