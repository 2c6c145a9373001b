package audit

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
