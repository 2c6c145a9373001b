package integration

// One deadline policy (resolver.Deadlines): an exec entry's own timeout is
// honoured, and no request waits longer than twice a call's budget.

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// An exec entry's timeout: 3s was cut to --timeout 1s.
func TestExecEntryTimeoutIsHonoured(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "slow.sh")
	os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = get ] || exit 2\nsleep 2\nprintf 'took-two-seconds'\n"), 0o755)
	conf := filepath.Join(dir, "secretfs.yaml")
	os.WriteFile(conf, []byte("exec-providers:\n  - name: slow\n    command: ["+script+"]\n    timeout: 4s\n"), 0o600)
	d := mount(t, nil, "--config", conf, "--timeout", "1s", "--env-allow", "NONE")
	if got, err := os.ReadFile(d.Path("slow", "k")); err != nil || string(got) != "took-two-seconds" {
		t.Errorf("a 2 s program with timeout: 4s under --timeout 1s = %q, %v; want its value", got, err)
	}
}

// The longest a lookup waits is twice --timeout (README), however many
// steps it takes: a listing that hangs, then the value, then what is below
// the name.
func TestLookupWaitsAtMostTwiceTheTimeout(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"hanglist/x": "x"})
	d := testMount(t, b, "--timeout", "1s")
	for _, p := range []string{"hanglist/nope", "newdir/x"} {
		if p == "newdir/x" {
			hang := filepath.Join(b.Dir, ".hang")
			os.WriteFile(hang, nil, 0o600)
			defer os.Remove(hang)
		}
		start := time.Now()
		_, err := os.Stat(d.Path("test", p))
		el := time.Since(start)
		if err == nil {
			t.Errorf("stat %s: found", p)
		}
		if !os.IsNotExist(err) {
			wantErrno(t, "stat "+p, err, syscall.EIO)
		}
		if el > 2*time.Second+500*time.Millisecond {
			t.Errorf("stat %s waited %v, want at most twice --timeout (2s)", p, el)
		}
	}
}
