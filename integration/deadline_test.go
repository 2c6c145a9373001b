package integration

// One deadline policy (resolver.Deadlines): an exec entry's own timeout is
// honoured, and no request waits longer than twice a call's budget.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
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

// The daemon's log went to a stderr nobody read: once the pipe was full,
// the next request that logged waited for it forever, and so did its
// reader. A log line now never holds up a request: lines a stalled log
// cannot take are dropped and counted.
func TestStalledLogHangsNoReader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r, w, err := os.Pipe() // nobody reads r
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mountpoints.Store(dir, true)
	cmd := exec.Command(secretfsBin, "mount", "--providers", "env", "--env-allow", "NONE", "--log-level", "debug", dir)
	cmd.Stderr = w
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		syscall.Unmount(dir, syscall.MNT_DETACH)
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v", err)
	}
	_ = line
	// Each lookup of a name that is not there logs at debug level: far
	// more than a pipe holds.
	done := make(chan int, 1)
	go func() {
		for i := range 3000 {
			os.Stat(filepath.Join(dir, "env", fmt.Sprintf("MISSING_%d", i)))
		}
		done <- 3000
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("lookups hang on a log nobody reads")
	}
}
