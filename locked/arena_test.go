package locked

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// vmLck is the memory this process has locked, from /proc/self/status.
func vmLck(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmLck:"); ok {
			var kb int64
			fmt.Sscan(rest, &kb)
			return kb << 10
		}
	}
	t.Fatal("no VmLck")
	return 0
}

// Values of every size are copied whole into locked memory; small ones
// share chunks, so a thousand of them take a handful of mappings.
func TestCopiesAreLockedAndShareChunks(t *testing.T) {
	a := New(0)
	before := vmLck(t)
	var holds []any
	var copies [][]byte
	for i := range 1000 {
		v := bytes.Repeat([]byte{byte(i)}, 1+i%200)
		c, h, err := a.Copy(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c, v) || cap(c) != len(v) {
			t.Fatalf("copy %d: %d bytes (cap %d), want %d equal bytes", i, len(c), cap(c), len(v))
		}
		holds, copies = append(holds, h), append(copies, c)
	}
	big, h, err := a.Copy(bytes.Repeat([]byte("b"), 100_000))
	if err != nil || len(big) != 100_000 {
		t.Fatalf("a 100 kB value: %d bytes, %v", len(big), err)
	}
	holds = append(holds, h)
	st := a.Stats()
	if st.Held != 1001 || st.Mappings > 8 {
		t.Errorf("stats %+v: want 1001 values in at most 8 mappings", st)
	}
	if got := vmLck(t) - before; got < st.Locked {
		t.Errorf("VmLck grew by %d, want at least the %d bytes the arena locked", got, st.Locked)
	}
	for i, c := range copies {
		if c[0] != byte(i) {
			t.Fatalf("copy %d was overwritten", i)
		}
	}
	runtime.KeepAlive(holds)
}

// A slot no handle keeps is wiped and used again; a mapping of its own is
// given back.
func TestDroppedValuesAreWipedAndReused(t *testing.T) {
	a := New(0)
	c, h, err := a.Copy([]byte("TOPSECRET-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	raw := unsafe.Slice(unsafe.SliceData(c), 32) // the slot, seen past the handle's life
	_, bh, err := a.Copy(make([]byte, 50_000))
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(h)
	runtime.KeepAlive(bh)
	h, bh = nil, nil
	waitFor(t, "the values to be released", func() bool { return a.Stats().Held == 0 })
	if !bytes.Equal(raw, make([]byte, 32)) {
		t.Errorf("the dropped slot holds %q, want zeros", raw)
	}
	if st := a.Stats(); st.Mappings != 1 || st.Locked != ChunkSize {
		t.Errorf("after the drop: %+v, want one chunk (the big value's mapping given back)", st)
	}
	c2, h2, err := a.Copy([]byte("next"))
	if err != nil || unsafe.SliceData(c2) != unsafe.SliceData(c) {
		t.Errorf("a new value of the same class did not reuse the wiped slot (err %v)", err)
	}
	runtime.KeepAlive(h2)
}

// When no more memory can be locked, Copy fails with ErrFull and counts
// it, after giving dropped values back; the arena goes on serving.
func TestFullArenaFailsAndCounts(t *testing.T) {
	a := New(2 * ChunkSize)
	var holds []any
	for range 2 * ChunkSize / 64 {
		_, h, err := a.Copy([]byte("v"))
		if err != nil {
			t.Fatal(err)
		}
		holds = append(holds, h)
	}
	if _, _, err := a.Copy([]byte("one more")); !errors.Is(err, ErrFull) {
		t.Fatalf("a copy past the bound: %v, want ErrFull", err)
	}
	if got := a.Stats().Failures; got != 1 {
		t.Errorf("failures = %d, want 1", got)
	}
	runtime.KeepAlive(holds)
	holds = nil
	// Dropped values come back: the next copy finds their slots.
	if _, h, err := a.Copy([]byte("after")); err != nil {
		t.Errorf("a copy once values were dropped: %v, want a slot", err)
	} else {
		runtime.KeepAlive(h)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		runtime.GC()
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("waiting for %s", what)
}
