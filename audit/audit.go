// Package audit writes the audit trail: one JSON record per line for every
// open of a secret (and every lookup that fails, every name the grammar
// rejects, every directory read that reads values ahead), never a value.
//
// The trail fails closed. A record is written through, with no buffer, before
// the open is answered; when it cannot be written (disk full, an I/O error, a
// pipe gone), the caller refuses the read (EIO). Vault promises the same: if
// no audit device can record a request, Vault refuses it. The records of
// concurrent opens are written together, in one write (to syslog, one
// message each); each open is still answered only once its own record is
// in the trail.
//
// Every line of a file is one whole record: a write cut short (a full disk)
// is truncated back to the last whole record, and those after it fail. On
// a pipe or syslog, where nothing can be taken back, the fragment is ended
// with a newline before the next record, so no record is glued onto it.
//
// No reader waits on the trail for longer than WriteWithin: records go
// through one writer goroutine, and a record it has not written by then
// (a pipe nobody reads, a stuck disk) fails, and is counted. A record
// given up on before the writer took it is never written; the one the
// writer is stuck on may still reach the trail when the sink drains.
package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Record is one audit record.
type Record struct {
	Time   time.Time `json:"time"`
	Op     string    `json:"op"` // open, denied, lookup, readdir
	Ref    string    `json:"ref,omitempty"`
	Refs   []string  `json:"refs,omitempty"` // a directory read that read values ahead
	Path   string    `json:"path,omitempty"` // below the mount
	Result string    `json:"result"`         // ok, or the error
	Rule   string    `json:"rule,omitempty"` // the access rule that decided, "INDEX:GLOB"
	Reason string    `json:"reason,omitempty"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	PID    uint32    `json:"pid"`
	Exe    string    `json:"exe,omitempty"`     // the program's path, in the caller's mount namespace
	ExeDev string    `json:"exe_dev,omitempty"` // the program's file: its device, MAJOR:MINOR,
	ExeIno uint64    `json:"exe_ino,omitempty"` // and inode
	// ExeNotAtPath: the caller runs in secretfs's mount namespace, and
	// Exe, there, is not the file it runs (a path of another namespace).
	ExeNotAtPath bool   `json:"exe_not_at_path,omitempty"`
	MntNS        uint64 `json:"mnt_ns,omitempty"` // the caller's mount namespace (inode)
	// OtherMntNS: the caller runs in another mount namespace than
	// secretfs's (a container), where Exe names a file of its own.
	OtherMntNS bool   `json:"other_mnt_ns,omitempty"`
	Cgroup     string `json:"cgroup,omitempty"`
	// Delegated: the caller may write its cgroup, so may have named it.
	Delegated bool   `json:"cgroup_delegated,omitempty"`
	Container string `json:"container,omitempty"` // never of a delegated cgroup
}

// WriteWithin bounds how long a record may take to be written.
const WriteWithin = 2 * time.Second

// ErrStalled: the trail did not take a record within WriteWithin.
var ErrStalled = errors.New("audit trail stalled")

// Log is an audit trail. It is safe for concurrent use.
type Log struct {
	w         io.Writer // written by the writer goroutine only
	closer    io.Closer // the file or the syslog connection; nil for stderr
	perRecord bool      // one Write per record (syslog: a write is a message)
	within    time.Duration
	lines     chan *line // to the writer goroutine
	stop      chan struct{}
	once      sync.Once

	failures atomic.Uint64
}

// line is one record on its way to the trail.
type line struct {
	b     []byte
	state atomic.Int32 // pending, then taken (by the writer) or abandoned (by Write)
	done  chan error   // capacity 1
}

// States of a line: a line is written only if the writer takes it before
// Write gives up on it, and a line given up on is never written.
const (
	pending int32 = iota
	taken
	abandoned
)

// Records of concurrent opens are written together, at most this many or
// this many bytes in one write.
const (
	maxBatch      = 256
	maxBatchBytes = 256 << 10
)

func newLog(w io.Writer, closer io.Closer) *Log {
	_, perRecord := w.(*syslog.Writer)
	l := &Log{w: w, closer: closer, perRecord: perRecord, within: WriteWithin, lines: make(chan *line, maxBatch), stop: make(chan struct{})}
	go l.writer()
	return l
}

// writer writes the records until Close: each write takes every record
// waiting, so that the trail keeps up with many readers at one write for
// many, and each record is answered once the write that holds it returned.
func (l *Log) writer() {
	var (
		batch []*line
		buf   []byte
		ends  []int // where each record of batch ends in buf
		// broken: the trail ends with part of a record (a pipe or syslog
		// took a short write): the next write ends that line first, so no
		// record is glued onto a fragment.
		broken bool
	)
	for {
		batch = batch[:0]
		select {
		case <-l.stop:
			return
		case ln := <-l.lines:
			batch = append(batch, ln)
		}
		size := len(batch[0].b)
	more:
		for len(batch) < maxBatch && size < maxBatchBytes && !l.perRecord {
			select {
			case ln := <-l.lines:
				batch = append(batch, ln)
				size += len(ln.b)
			default:
				break more
			}
		}
		buf, ends = buf[:0], ends[:0]
		if broken {
			buf = append(buf, '\n')
		}
		live := batch[:0]
		for _, ln := range batch {
			if !ln.state.CompareAndSwap(pending, taken) {
				continue // its open already failed: never to be written
			}
			buf = append(buf, ln.b...)
			ends = append(ends, len(buf))
			live = append(live, ln)
		}
		if len(live) == 0 {
			continue
		}
		var n int
		var err error
		if l.perRecord {
			n, err = l.writeEach(buf, ends)
		} else {
			n, err = l.w.Write(buf)
		}
		if err == nil && n < len(buf) {
			err = io.ErrShortWrite
		}
		if err != nil {
			n, broken = l.cut(buf, n)
		} else {
			broken = false
		}
		for i, ln := range live {
			if ends[i] <= n {
				ln.done <- nil
			} else {
				ln.done <- err
			}
		}
	}
}

// writeEach writes each record of buf on its own (buf may start with the
// newline that ends a fragment, which goes with the first).
func (l *Log) writeEach(buf []byte, ends []int) (int, error) {
	start := 0
	for _, end := range ends {
		n, err := l.w.Write(buf[start:end])
		if err != nil || n < end-start {
			if err == nil {
				err = io.ErrShortWrite
			}
			return start + n, err
		}
		start = end
	}
	return start, nil
}

// cut handles a write of buf that stopped after n bytes: it returns how
// much of buf stands in the trail as whole records, and whether the trail
// now ends in a fragment. A file is truncated back to the last whole
// record; on a pipe or syslog the fragment stays, and is ended before the
// next record.
func (l *Log) cut(buf []byte, n int) (int, bool) {
	n = max(n, 0)
	whole := bytes.LastIndexByte(buf[:n], '\n') + 1
	if whole == n {
		return n, false
	}
	if f, ok := l.w.(*File); ok && f.truncateTail(n-whole) == nil {
		return whole, false
	}
	return whole, true
}

// File is a file appended to, that Reopen opens again by its name (after
// logrotate moved it away). The audit trail is written to one, and so may
// the daemon's log be. It is safe for concurrent use.
type File struct {
	path string
	mu   sync.Mutex
	f    *os.File // guarded by mu
}

// OpenFile opens path for appending, created 0600.
func OpenFile(path string) (*File, error) {
	f := &File{path: path}
	if err := f.Reopen(); err != nil {
		return nil, err
	}
	return f, nil
}

// Write appends p.
func (f *File) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Write(p)
}

// truncateTail cuts the last n bytes off the file: a record only partly
// written (the disk filled up), which would otherwise glue the next record
// onto it.
func (f *File) truncateTail(n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	end, err := f.f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if int64(n) > end {
		return fmt.Errorf("audit: %d bytes to cut from a file of %d", n, end)
	}
	return f.f.Truncate(end - int64(n))
}

// Reopen opens the file by its name again.
func (f *File) Reopen() error {
	nf, err := os.OpenFile(f.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	f.mu.Lock()
	old := f.f
	f.f = nf
	f.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Close closes it.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Close()
}

// Open opens the trail: "-" is stderr, "syslog" the local syslog socket
// (authpriv), anything else a file appended to (created 0600).
func Open(dest string, stderr io.Writer) (*Log, error) {
	switch dest {
	case "-":
		return newLog(stderr, nil), nil
	case "syslog":
		w, err := syslog.New(syslog.LOG_AUTHPRIV|syslog.LOG_INFO, "secretfs")
		if err != nil {
			return nil, fmt.Errorf("syslog: %w", err)
		}
		return newLog(w, w), nil
	}
	f, err := OpenFile(dest)
	if err != nil {
		return nil, err
	}
	return newLog(f, f), nil
}

// Write writes rec through. An error means the record is not in the trail.
func (l *Log) Write(rec Record) error {
	rec.Ref, rec.Path, rec.Exe, rec.Cgroup = Escape(rec.Ref), Escape(rec.Path), Escape(rec.Exe), Escape(rec.Cgroup)
	for i, r := range rec.Refs {
		rec.Refs[i] = Escape(r)
	}
	ln := &line{b: append(appendRecord(make([]byte, 0, 512), &rec), '\n'), done: make(chan error, 1)}
	deadline := time.NewTimer(l.within)
	defer deadline.Stop()
	select {
	case l.lines <- ln:
	case <-deadline.C:
		ln.state.Store(abandoned)
		l.failures.Add(1)
		return fmt.Errorf("audit: %w within %v", ErrStalled, l.within)
	}
	var err error
	select {
	case err = <-ln.done:
	case <-deadline.C:
		// Not taken yet: it never will be. Taken: it is in the write the
		// writer is stuck on, and may reach the trail when the sink drains.
		ln.state.CompareAndSwap(pending, abandoned)
		l.failures.Add(1)
		return fmt.Errorf("audit: %w within %v", ErrStalled, l.within)
	}
	if err != nil {
		l.failures.Add(1)
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// Failures counts the records that could not be written.
func (l *Log) Failures() uint64 { return l.failures.Load() }

// Reopen opens the file by its name again (logrotate); a no-op for stderr
// and syslog.
func (l *Log) Reopen() error {
	f, ok := l.w.(*File)
	if !ok {
		return nil
	}
	// The file's lock is held by a write stuck on a stalled sink: a reload
	// does not wait on it past the deadline.
	done := make(chan error, 1)
	go func() { done <- f.Reopen() }()
	select {
	case err := <-done:
		return err
	case <-time.After(l.within):
		return fmt.Errorf("audit: reopening: %w within %v", ErrStalled, l.within)
	}
}

// Close stops the writer and closes the trail, waiting at most WriteWithin;
// a writer stuck on a stalled sink is left behind.
func (l *Log) Close() error {
	l.once.Do(func() { close(l.stop) })
	if l.closer == nil {
		return nil
	}
	// A closer may wait on the writer stuck on a stalled sink: the daemon
	// does not wait on it past the deadline.
	done := make(chan error, 1)
	go func() { done <- l.closer.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(l.within):
		return fmt.Errorf("audit: closing: %w within %v", ErrStalled, l.within)
	}
}

// Escape makes s valid UTF-8 by writing each byte that is not as \xNN, so
// that a record can be matched to the name it is about (JSON would replace
// such bytes with U+FFFD). A backslash is doubled, so that the escape is
// unambiguous.
func Escape(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, '\\') < 0 {
		return s
	}
	out := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = fmt.Appendf(out, `\x%02x`, s[i])
		case r == '\\':
			out = append(out, '\\', '\\')
		default:
			out = append(out, s[i:i+size]...)
		}
		i += size
	}
	return string(out)
}
