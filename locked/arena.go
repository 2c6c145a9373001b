// Package locked keeps secret values in memory that never reaches swap.
//
// An Arena is a set of chunks, each an anonymous mapping of ChunkSize
// bytes locked with mlock(2) and left out of core dumps. A chunk serves
// slots of one size class (64 bytes to half a chunk); a value larger than
// that gets a mapping of its own, rounded to pages. So the memory locked
// grows with the values held, page by page, and thousands of values take a
// handful of mappings, not thousands.
//
// Copy puts a value in a slot and returns the copy with a handle. The slot
// belongs to the handle: while the handle is reachable the copy is valid;
// once it is not, the garbage collector's cleanup wipes the slot and gives
// it back. Whoever keeps the copy keeps the handle beside it (a
// resolver.Secret carries it in Hold), and whoever reads the copy after
// dropping the struct that carried the handle must runtime.KeepAlive it.
//
// When a chunk cannot be locked (RLIMIT_MEMLOCK without CAP_IPC_LOCK, or
// Max reached), Copy collects garbage once, so that dropped slots come
// back, and otherwise fails with ErrFull; the failure is counted and the
// process goes on.
package locked

import (
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ChunkSize is the size of a chunk; values above half of it get a mapping
// of their own.
const ChunkSize = 64 << 10

const (
	minClass = 6  // 64-byte slots
	maxClass = 15 // ChunkSize/2
)

// ErrFull is a value that found no locked memory.
var ErrFull = errors.New("no locked memory left (RLIMIT_MEMLOCK, ulimit -l)")

// Arena holds locked values. Its zero value is not usable: use New.
type Arena struct {
	// Max bounds the bytes locked (0: only RLIMIT_MEMLOCK does).
	max int64

	mu     sync.Mutex
	free   [maxClass + 1][][]byte // guarded by mu; by class, the slots free (wiped)
	locked int64                  // guarded by mu; bytes of the mappings
	maps   int                    // guarded by mu; mappings made

	held     atomic.Int64  // values held
	failures atomic.Uint64 // copies that found no locked memory
}

// New returns an arena that locks at most max bytes (0: no bound of its
// own).
func New(max int64) *Arena { return &Arena{max: max} }

// Handle keeps a slot. A nil Handle keeps nothing (an empty value).
type Handle struct{ _ [16]byte } // not a tiny object: its cleanup runs

// Copy copies b into locked memory. The copy is valid while the handle is
// reachable.
func (a *Arena) Copy(b []byte) (locked []byte, hold any, err error) {
	if len(b) == 0 {
		return []byte{}, nil, nil
	}
	slot, err := a.slot(len(b))
	if err != nil {
		a.failures.Add(1)
		return nil, nil, err
	}
	n := copy(slot, b)
	h := new(Handle)
	runtime.AddCleanup(h, a.release, slot)
	a.held.Add(1)
	return slot[:n:n], h, nil
}

// class is the size class of n bytes, or -1 for a mapping of its own.
func class(n int) int {
	c := max(bits.Len(uint(n-1)), minClass)
	if c > maxClass {
		return -1
	}
	return c
}

// slot takes a slot for n bytes. When the arena cannot grow, the slots of
// values no longer reachable come back after a collection, once their
// cleanups have run (in a goroutine of the runtime's): it collects and
// looks again, for up to 200 ms.
func (a *Arena) slot(n int) ([]byte, error) {
	s, err := a.take(n)
	for wait := time.Millisecond; err != nil && wait < 128*time.Millisecond; wait *= 2 {
		runtime.GC()
		time.Sleep(wait)
		s, err = a.take(n)
	}
	return s, err
}

func (a *Arena) take(n int) ([]byte, error) {
	c := class(n)
	a.mu.Lock()
	defer a.mu.Unlock()
	if c < 0 {
		size := (n + unix.Getpagesize() - 1) &^ (unix.Getpagesize() - 1)
		return a.mapLocked(size)
	}
	if free := a.free[c]; len(free) > 0 {
		s := free[len(free)-1]
		a.free[c] = free[:len(free)-1]
		return s, nil
	}
	chunk, err := a.mapLocked(ChunkSize)
	if err != nil {
		return nil, err
	}
	size := 1 << c
	for off := size; off < ChunkSize; off += size {
		a.free[c] = append(a.free[c], chunk[off:off+size:off+size])
	}
	return chunk[:size:size], nil
}

// mapLocked maps size bytes and locks them. Called with mu held.
func (a *Arena) mapLocked(size int) ([]byte, error) {
	if a.max > 0 && a.locked+int64(size) > a.max {
		return nil, fmt.Errorf("%w: the arena's bound of %d bytes", ErrFull, a.max)
	}
	m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("%w: mmap: %v", ErrFull, err)
	}
	if err := unix.Mlock(m); err != nil {
		unix.Munmap(m)
		return nil, fmt.Errorf("%w: mlock: %v", ErrFull, err)
	}
	unix.Madvise(m, unix.MADV_DONTDUMP)
	a.locked += int64(size)
	a.maps++
	return m, nil
}

// release wipes a slot no handle keeps and gives it back: a slot to its
// class, a mapping of its own to the system.
func (a *Arena) release(slot []byte) {
	clear(slot[:cap(slot)])
	a.held.Add(-1)
	c := class(cap(slot))
	a.mu.Lock()
	defer a.mu.Unlock()
	if c < 0 || 1<<c != cap(slot) {
		a.locked -= int64(cap(slot))
		a.maps--
		unix.Munmap(slot[:cap(slot)])
		return
	}
	a.free[c] = append(a.free[c], slot)
}

// Stats is what an arena holds.
type Stats struct {
	Locked   int64  // bytes locked
	Mappings int    // mappings
	Held     int64  // values held
	Failures uint64 // copies that found no locked memory
}

// Stats returns what a holds.
func (a *Arena) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Stats{Locked: a.locked, Mappings: a.maps, Held: a.held.Load(), Failures: a.failures.Load()}
}
