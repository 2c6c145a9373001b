package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// backendCalls counts the backend calls a daemon logged for op, as the
// cache names it ("test:hot", "list test:dir/").
func backendCalls(d *daemon, op string) int {
	n := 0
	for line := range strings.Lines(d.Stderr()) {
		if strings.Contains(line, `msg="backend call"`) && (strings.Contains(line, "op="+op+"\n") || strings.Contains(line, `op="`+op+`"`)) {
			n++
		}
	}
	return n
}

// readBytewise opens path and reads it one byte a call to the end.
func readBytewise(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readRest(f)
}

func readRest(f *os.File) ([]byte, error) {
	var out []byte
	b := make([]byte, 1)
	for {
		n, err := f.Read(b)
		out = append(out, b[:n]...)
		if n == 0 || err != nil {
			if err != nil && err.Error() != "EOF" {
				return out, err
			}
			return out, nil
		}
	}
}

// version is a value made of one repeated byte, so a mix of two is seen.
func version(c byte, n int) string { return strings.Repeat(string(c), n) }

func TestAuditModeRecordsEveryOpen(t *testing.T) {
	t.Parallel()
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	b := newTestBackend(t, map[string]string{"a/b/c": "audited-value"})
	d := testMount(t, b, "--audit-log", audit)
	const n = 25
	for range n {
		if got, err := os.ReadFile(d.Path("test", "a", "b", "c")); err != nil || string(got) != "audited-value" {
			t.Fatalf("read: %q, %v", got, err)
		}
	}
	data, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	opens := 0
	for line := range bytes.Lines(data) {
		var rec struct {
			Msg    string `json:"op"`
			Ref    string `json:"ref"`
			Result string `json:"result"`
			PID    int    `json:"pid"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if rec.Msg == "open" && rec.Ref == "test:a/b/c" && rec.Result == "ok" && rec.PID != 0 {
			opens++
		}
	}
	if opens != n {
		t.Errorf("audit has %d open records, want %d (one per open)", opens, n)
	}
	if bytes.Contains(data, []byte("audited-value")) {
		t.Error("the audit trail contains the value")
	}
}

func TestFastModeOpensStayInTheKernel(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v"})
	d := testMount(t, b, "-o", "debug")
	// go-fuse's own start-up check opens node 2^64-1: not ours.
	count := func(op string) int {
		return strings.Count(d.Stderr(), ": "+op+" ") - strings.Count(d.Stderr(), ": "+op+" n18446744073709551615 ")
	}
	// flush waits until the daemon's log has caught up with the kernel:
	// the log is a pipe, read by another goroutine.
	flush := func(marker string) {
		os.Stat(d.Path("test", marker))
		eventually(t, 5*time.Second, "the log catches up", func() bool { return strings.Contains(d.Stderr(), `"`+marker+`"`) })
	}
	if _, err := os.ReadFile(d.Path("test", "k")); err != nil {
		t.Fatal(err)
	}
	flush("marker-1")
	if count("OPEN") != 1 || count("READ") != 1 {
		t.Fatalf("first read: %d OPEN and %d READ, want one of each", count("OPEN"), count("READ"))
	}
	for range 20 {
		if _, err := os.ReadFile(d.Path("test", "k")); err != nil {
			t.Fatal(err)
		}
	}
	flush("marker-2")
	// The first open learned NO_OPEN; after that no OPEN, READ or FLUSH
	// reaches the daemon.
	for _, op := range []string{"OPEN", "READ", "FLUSH"} {
		if n := count(op); n > 1 {
			t.Errorf("%d %s requests for 21 reads, want the first only", n, op)
		}
	}
	if t.Failed() {
		for line := range strings.Lines(d.Stderr()) {
			if strings.Contains(line, ": OPEN ") || strings.Contains(line, ": READ ") || strings.Contains(line, ": LOOKUP ") {
				t.Log(strings.TrimSpace(line))
			}
		}
	}
}

func TestFailingAndHangingListings(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{
		"hanglist/x": "x-value", "hanglist/y": "y-value",
		"faillist/x": "fx-value",
	})
	d := testMount(t, b, "--timeout", "1s")
	start := time.Now()
	if got, err := os.ReadFile(d.Path("test", "faillist", "x")); err != nil || string(got) != "fx-value" {
		t.Errorf("below a failing listing: %q, %v; want the secret", got, err)
	}
	if el := time.Since(start); el > 900*time.Millisecond {
		t.Errorf("a failing listing delayed the read by %v", el)
	}
	if got, err := os.ReadFile(d.Path("test", "hanglist", "x")); err != nil || string(got) != "x-value" {
		t.Errorf("below a hanging listing: %q, %v; want the secret after the listing's budget", got, err)
	}
	// The hanging listing is remembered: the next name does not wait again.
	start = time.Now()
	if got, err := os.ReadFile(d.Path("test", "hanglist", "y")); err != nil || string(got) != "y-value" {
		t.Errorf("second name below a hanging listing: %q, %v", got, err)
	}
	if el := time.Since(start); el > 900*time.Millisecond {
		t.Errorf("the second lookup waited %v for a listing known to hang", el)
	}
	d.syncLog(t, "test")
	if n := backendCalls(d, "list test:hanglist/"); n != 1 {
		t.Errorf("hanging listing asked %d times, want 1", n)
	}
	_, err := os.ReadDir(d.Path("test", "hanglist"))
	wantErrno(t, "ls of a hanging listing", err, syscall.EIO)
}

func TestExactNamesWithAt(t *testing.T) {
	t.Parallel()
	d := mount(t, []string{"SFS_AT_TRAIL@=exact", "SFS_AT_TRAIL=plain", "SFS_AT_ONLY@=lone"}, "--env-allow", "SFS_AT_*")
	want := []string{"SFS_AT_ONLY@", "SFS_AT_TRAIL", "SFS_AT_TRAIL@"}
	if got := readDir(t, d.Path("env")); !slices.Equal(got, want) {
		t.Errorf("ls env = %q, want %q", got, want)
	}
	for name, value := range map[string]string{"SFS_AT_TRAIL@": "exact", "SFS_AT_TRAIL": "plain", "SFS_AT_ONLY@": "lone"} {
		if got, err := os.ReadFile(d.Path("env", name)); err != nil || string(got) != value {
			t.Errorf("cat env/%s = %q, %v; want %q (a listed name reads itself)", name, got, err, value)
		}
	}
}

func TestMissingNamesEvictNoValue(t *testing.T) {
	t.Parallel()
	files := map[string]string{}
	for i := range 20 {
		files[fmt.Sprintf("keep/k%02d", i)] = fmt.Sprint("value-", i)
	}
	b := newTestBackend(t, files)
	d := testMount(t, b, "--max-entries", "50", "--ttl", "1h")
	for k, v := range files {
		if got, err := os.ReadFile(d.Path("test", k)); err != nil || string(got) != v {
			t.Fatalf("%s: %q, %v", k, got, err)
		}
	}
	for i := range 1200 {
		_, err := os.Stat(d.Path("test", "keep", fmt.Sprint("missing-", i)))
		if !os.IsNotExist(err) {
			t.Fatalf("missing-%d: %v, want ENOENT", i, err)
		}
	}
	// "NAME@" is the current version of NAME: the same cached value, under
	// a name the kernel has not seen, so the daemon is asked.
	for k, v := range files {
		if got, err := os.ReadFile(d.Path("test", k+"@")); err != nil || string(got) != v {
			t.Fatalf("%s@ after the flood: %q, %v", k, got, err)
		}
	}
	d.syncLog(t, "test")
	calls := 0
	for k := range files {
		calls += backendCalls(d, "test:"+k)
	}
	if calls != len(files) {
		t.Errorf("after 1,200 missing names, the 20 values cost %d backend calls in all, want %d (the first reads only)", calls, len(files))
	}
}

func TestOutageServesDeepCachedPathsAtOnce(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"a/b/c/d/key": "deep-value", "a/b/c/d/other": "o"})
	d := testMount(t, b, "--ttl", "300ms", "--max-stale", "1h", "--timeout", "3s")
	p := d.Path("test", "a", "b", "c", "d", "key")
	if got, err := os.ReadFile(p); err != nil || string(got) != "deep-value" {
		t.Fatalf("warm-up: %q, %v", got, err)
	}
	b.setDown(true)
	time.Sleep(1200 * time.Millisecond) // past the TTL and the kernel's directory entries
	for i := range 3 {
		start := time.Now()
		got, err := os.ReadFile(p)
		if err != nil || string(got) != "deep-value" {
			t.Fatalf("read %d while down: %q, %v; want the cached value", i, got, err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("read %d of a cached path 4 directories deep took %v during an outage, want under 1s", i, el)
		}
	}
}

// An audit sink nobody drains (a FIFO whose reader stopped reading) once
// left every open in D state for good; each now fails closed (EIO) within
// the write deadline, and the daemon still stops.
func TestStalledAuditSinkFailsOpensWithinTheDeadline(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "audit.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A reader that opens the FIFO and never reads: writes block once the
	// pipe's 64 KiB are full.
	rd, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	b := newTestBackend(t, map[string]string{"k": "audited"})
	d := testMount(t, b, "--audit-log", fifo)
	p := d.Path("test", "k")
	var failed error
	for i := 0; i < 2000 && failed == nil; i++ {
		start := time.Now()
		_, err := os.ReadFile(p)
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("open %d waited %v on the audit trail, want at most its 2 s deadline", i, el)
		}
		failed = err
	}
	wantErrno(t, "an open whose record cannot be written", failed, syscall.EIO)
	d.waitLog(t, "audit record not written", "the stalled trail was not logged")
	start := time.Now()
	if err := d.terminate(); err != nil { // the sink is still stalled
		t.Errorf("SIGTERM with the audit sink stalled: %v", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("the daemon took %v to stop with the audit sink stalled", el)
	}
}
