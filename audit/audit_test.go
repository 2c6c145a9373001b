package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain": "plain", "ünï": "ünï", "bad\xffname": `bad\xffname`, `back\slash`: `back\\slash`, "\xc3": `\xc3`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

func TestWriteFailsClosed(t *testing.T) {
	l := newLog(failing{}, nil)
	defer l.Close()
	if err := l.Write(Record{Op: "open"}); err == nil || l.Failures() != 1 {
		t.Errorf("Write to a full disk = %v, failures %d; want an error and a count", err, l.Failures())
	}
	var buf bytes.Buffer
	l = newLog(&buf, nil)
	defer l.Close()
	if err := l.Write(Record{Op: "open", Ref: "env:bad\xff"}); err != nil || !strings.Contains(buf.String(), `"ref":"env:bad\\xff"`) || !strings.HasSuffix(buf.String(), "}\n") {
		t.Errorf("Write = %v, %q; want one line with the name escaped", err, buf.String())
	}
}

func TestFileReopens(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Write(Record{Op: "open", Ref: "a:1"})
	os.Rename(p, p+".1") // logrotate
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Write(Record{Op: "open", Ref: "a:2"})
	old, _ := os.ReadFile(p + ".1")
	cur, _ := os.ReadFile(p)
	if !strings.Contains(string(old), "a:1") || !strings.Contains(string(cur), "a:2") || strings.Contains(string(cur), "a:1") {
		t.Errorf("after a reopen: old %q, new %q", old, cur)
	}
}

// A sink nobody drains (a pipe whose reader stopped) hung every open for
// good; each record now fails within its deadline, and is counted.
func TestStalledSinkFailsWithinTheDeadline(t *testing.T) {
	r, w := io.Pipe() // nobody reads r
	defer r.Close()
	l := newLog(w, nil)
	l.within = 100 * time.Millisecond
	defer l.Close()
	for i := range 3 {
		start := time.Now()
		err := l.Write(Record{Op: "open", Ref: "env:A"})
		if el := time.Since(start); !errors.Is(err, ErrStalled) || el > time.Second {
			t.Errorf("write %d to a stalled sink = %v after %v; want ErrStalled within its deadline", i, err, el)
		}
	}
	if n := l.Failures(); n != 3 {
		t.Errorf("failures = %d, want 3", n)
	}
}

// gated is a sink whose first write waits for open, and which counts its
// writes.
type gated struct {
	open   chan struct{}
	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
}

func (g *gated) Write(p []byte) (int, error) {
	g.mu.Lock()
	first := g.writes == 0
	g.writes++
	g.mu.Unlock()
	if first {
		<-g.open
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

// Records were written one at a time, so the trail capped opens per second
// whatever the readers; the records of concurrent opens now share a write,
// and each Write still returns only once its own record is written.
func TestConcurrentRecordsShareAWrite(t *testing.T) {
	g := &gated{open: make(chan struct{})}
	l := newLog(g, nil)
	defer l.Close()
	first := make(chan error, 1)
	go func() { first <- l.Write(Record{Op: "open", Ref: "env:FIRST"}) }()
	for g.count() == 0 { // the writer is in the first write
		time.Sleep(time.Millisecond)
	}
	const n = 10
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- l.Write(Record{Op: "open", Ref: fmt.Sprintf("env:K%d", i)}) }()
	}
	// All ten wait for the writer (their records queued), or, where they
	// cannot queue, two seconds have passed.
	for deadline := time.Now().Add(2 * time.Second); cap(l.lines) > 0 && len(l.lines) < n && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // and any that cannot queue are at the door
	select {
	case err := <-errs:
		t.Fatalf("a Write returned (%v) before its record was written", err)
	default:
	}
	close(g.open)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got, want := g.count(), 2; got != want {
		t.Errorf("writes = %d, want %d (one for the first record, one for the ten that waited)", got, want)
	}
	if got, want := strings.Count(g.buf.String(), "\n"), n+1; got != want {
		t.Errorf("%d lines, want %d", got, want)
	}
}

func (g *gated) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.writes
}

// short is a pipe that takes only part of one write, then fails it.
type short struct {
	buf   bytes.Buffer
	fails int // which write (1-based) is cut short
	n     int
}

func (s *short) Write(p []byte) (int, error) {
	s.n++
	if s.n == s.fails {
		s.buf.Write(p[:len(p)/2])
		return len(p) / 2, errors.New("broken pipe")
	}
	return s.buf.Write(p)
}

// A write cut short left half a record, and the next record was glued onto
// it (invalid JSON, lost to a consumer). On a sink that cannot take it
// back, the fragment is now ended with a newline before the next record.
func TestFragmentIsEndedBeforeTheNextRecord(t *testing.T) {
	s := &short{fails: 2}
	l := newLog(s, nil)
	defer l.Close()
	for i, wantErr := range []bool{false, true, false, false} {
		err := l.Write(Record{Op: "open", Ref: fmt.Sprintf("env:K%d", i)})
		if (err != nil) != wantErr {
			t.Errorf("record %d: %v; want error %v", i, err, wantErr)
		}
	}
	lines := strings.Split(strings.TrimSuffix(s.buf.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("lines %q: want the first record, the fragment, and two records", lines)
	}
	for i, want := range map[int]string{0: "env:K0", 2: "env:K2", 3: "env:K3"} {
		var rec Record
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil || rec.Ref != want {
			t.Errorf("line %d %q: %v, ref %q; want a whole record of %s", i, lines[i], err, rec.Ref, want)
		}
	}
}

// On a full disk a record was written in part, and the next one glued onto
// it. A file is now truncated back to its last whole record: every line of
// it is a record, and no open whose record is not whole was let through.
func TestFullDiskLeavesOnlyWholeRecords(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=8k"); err != nil {
		t.Skipf("cannot mount a tiny tmpfs (%v): needs root", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	p := filepath.Join(dir, "audit.jsonl")
	l, err := Open(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The other page is taken: the trail has one page of 4096 bytes.
	if err := os.WriteFile(filepath.Join(dir, "filler"), bytes.Repeat([]byte{'x'}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	ok, failed := 0, 0
	for i := range 100 {
		if err := l.Write(Record{Op: "open", Ref: fmt.Sprintf("env:KEY_%03d", i), Path: "env/KEY"}); err != nil {
			failed++
		} else {
			ok++
		}
	}
	if ok == 0 || failed == 0 {
		t.Fatalf("%d records written, %d failed; want the disk to fill up", ok, failed)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(data, []byte("\n")) {
		t.Errorf("the trail ends in part of a record: %q", data[max(len(data)-40, 0):])
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	for i, line := range lines {
		var rec Record
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Errorf("line %d %q: %v", i+1, line, err)
		}
	}
	if len(lines) != ok {
		t.Errorf("%d lines for %d records written", len(lines), ok)
	}
	// Space again: records are whole lines after the cut.
	os.Remove(filepath.Join(dir, "filler"))
	if err := l.Write(Record{Op: "open", Ref: "env:AFTER"}); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(p)
	last := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	var rec Record
	if err := json.Unmarshal(last[len(last)-1], &rec); err != nil || rec.Ref != "env:AFTER" {
		t.Errorf("the record after the disk had room again: %q, %v", last[len(last)-1], err)
	}
}

// appendRecord writes what encoding/json writes, without reflection.
func TestAppendRecordIsJSON(t *testing.T) {
	for _, rec := range []Record{
		{},
		{Time: time.Date(2026, 12, 2, 16, 0, 0, 123456789, time.UTC), Op: "open", Ref: "env:A", Path: "env/A", Result: "ok", UID: 1, GID: 2, PID: 3},
		{Time: time.Now(), Op: "denied", Ref: "x:\"q\"\\ <a&b> \u2028\u2029 \x01\t\n\r\b\f\x1f é", Refs: []string{"a", "b\x7f"}, Rule: "1:a/**", Reason: "why",
			Exe: "/bin/cat", ExeDev: "8:1", ExeIno: 42, ExeNotAtPath: true, MntNS: 4026531841, OtherMntNS: true, Cgroup: "/a", Delegated: true, Container: "c"},
		{Ref: "bad\xffutf8"},
	} {
		want, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendRecord(nil, &rec); string(got) != string(want) {
			t.Errorf("appendRecord = %s\nwant           %s", got, want)
		}
	}
}

// Records waiting in the queue when their opens gave up were written once
// the sink drained, saying "ok" of opens that had failed. Only the record
// the writer is stuck on may still reach the trail.
func TestRecordsGivenUpOnAreNeverWritten(t *testing.T) {
	g := &gated{open: make(chan struct{})}
	l := newLog(g, nil)
	l.within = 200 * time.Millisecond
	defer l.Close()
	errs := make(chan error, 5)
	go func() { errs <- l.Write(Record{Op: "open", Ref: "env:STUCK"}) }()
	for g.count() == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := range 4 {
		go func() { errs <- l.Write(Record{Op: "open", Ref: fmt.Sprintf("env:Q%d", i)}) }()
	}
	for range 5 {
		if err := <-errs; !errors.Is(err, ErrStalled) {
			t.Fatalf("Write = %v, want ErrStalled", err)
		}
	}
	close(g.open) // the sink drains
	if err := l.Write(Record{Op: "open", Ref: "env:AFTER"}); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	out := g.buf.String()
	g.mu.Unlock()
	if strings.Contains(out, "env:Q") {
		t.Errorf("records given up on were written:\n%s", out)
	}
	if !strings.Contains(out, "env:AFTER") {
		t.Errorf("the record after the drain is missing:\n%s", out)
	}
}
