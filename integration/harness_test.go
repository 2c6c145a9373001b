package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	// secretfsBin is the binary under test, built by TestMain.
	secretfsBin string
	// workDir holds the build and is where every test mount lives below
	// (t.TempDir is below os.TempDir, so mounts are also found by prefix).
	workDir string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		if _, err := os.Stat("/dev/fuse"); err != nil {
			fmt.Fprintln(os.Stderr, "integration: /dev/fuse is missing; these tests mount for real")
			return 1
		}
	}
	var err error
	workDir, err = os.MkdirTemp("", "secretfs-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(workDir)
	secretfsBin = filepath.Join(workDir, "secretfs")
	build := exec.Command("go", "build", "-tags", "secretfs_testing", "-o", secretfsBin, "github.com/secretfs/secretfs/cmd/secretfs")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: building secretfs:", err)
		return 1
	}

	code := m.Run()
	stopBackends()

	if left := leftoverMounts(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "integration: FAIL: FUSE mounts left behind: %q\n", left)
		for _, mnt := range left {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
		return 1
	}
	return code
}

// mountpoints are the directories this run's daemons mounted: what is
// left mounted among them at the end is this run's fault (another run's
// mounts, a suite running beside this one, are none of its business).
var mountpoints sync.Map

// leftoverMounts lists the secretfs mounts this run left behind.
func leftoverMounts() []string {
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return nil
	}
	var left []string
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "fuse.secretfs" {
			continue
		}
		if _, ours := mountpoints.Load(f[1]); ours {
			left = append(left, f[1])
		}
	}
	return left
}

func isMounted(dir string) bool {
	data, _ := os.ReadFile("/proc/mounts")
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == dir {
			return true
		}
	}
	return false
}

// daemon is a running `secretfs mount`.
type daemon struct {
	t      testing.TB
	Dir    string
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer // guarded by mu
	syncs  int          // guarded by mu; markers syncLog used (one backend read each)
	exited chan struct{}
	err    error // set before exited is closed
	// wrap, when set, runs secretfs under these commands (prlimit,
	// setpriv), each of which execs the next: the pid stays the daemon's.
	wrap []string
}

// Stderr returns what the daemon logged so far.
func (d *daemon) Stderr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// syncLog waits until the daemon's log has caught up with what the kernel
// asked of it so far: stderr is a pipe, copied by another goroutine. It
// looks up a name of its own below provider (a field of a missing secret:
// one read, no listing or probe) and waits for the cache's debug line of
// that read.
func (d *daemon) syncLog(t testing.TB, provider string) {
	t.Helper()
	d.mu.Lock()
	d.syncs++
	marker := fmt.Sprintf("secretfs-sync-%d", d.syncs)
	d.mu.Unlock()
	os.Stat(d.Path(provider, marker+"#sync"))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.Stderr(), marker) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon never logged the lookup of %s/%s", provider, marker)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLog reports an error unless the daemon's log comes to contain want
// within 5 s: stderr is a pipe, copied by another goroutine, so a line
// written before a reply may reach us after it.
func (d *daemon) waitLog(t testing.TB, want, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(d.Stderr(), want) {
		if time.Now().After(deadline) {
			t.Errorf("%s: the log has no %q", what, want)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Path joins names below the mountpoint.
func (d *daemon) Path(elem ...string) string {
	return filepath.Join(append([]string{d.Dir}, elem...)...)
}

// mount starts `secretfs mount ARGS... DIR` on a fresh directory with the
// extra environment env, waits for its ready line, and unmounts it (SIGTERM,
// then a check that nothing is left) when the test ends.
func mount(t testing.TB, env []string, args ...string) *daemon {
	t.Helper()
	return mountAt(t, t.TempDir(), env, args...)
}

func mountAt(t testing.TB, dir string, env []string, args ...string) *daemon {
	t.Helper()
	d := startDaemon(t, dir, env, args...)
	t.Cleanup(func() { d.stop() })
	return d
}

func startDaemon(t testing.TB, dir string, env []string, args ...string) *daemon {
	t.Helper()
	return startWrapped(t, nil, dir, env, args...)
}

// mountWrapped mounts with secretfs run under wrap (see daemon.wrap).
func mountWrapped(t testing.TB, wrap, env []string, args ...string) *daemon {
	t.Helper()
	d := startWrapped(t, wrap, t.TempDir(), env, args...)
	t.Cleanup(func() { d.stop() })
	return d
}

func startWrapped(t testing.TB, wrap []string, dir string, env []string, args ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, Dir: dir, wrap: wrap}
	full := append([]string{"mount", "--log-level", "debug"}, args...)
	line := d.start(append(full, dir), env)
	if !strings.Contains(line, "mounted "+dir) {
		d.kill()
		t.Fatalf("unexpected ready line %q", line)
	}
	if !isMounted(dir) {
		t.Fatalf("ready line printed but %s is not in /proc/mounts", dir)
	}
	return d
}

// start runs secretfs with args and the extra environment env, and returns
// the first line it prints to stdout (its ready line), failing t if it
// exits first or prints nothing within 20s.
func (d *daemon) start(args, env []string) string {
	t := d.t
	t.Helper()
	if len(args) > 0 && args[0] == "mount" {
		mountpoints.Store(d.Dir, true)
	}
	d.exited = make(chan struct{})
	d.cmd = exec.Command(secretfsBin, args...)
	if len(d.wrap) > 0 {
		d.cmd = exec.Command(d.wrap[0], append(append(d.wrap[1:len(d.wrap):len(d.wrap)], secretfsBin), args...)...)
	}
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stderr = lockedWriter{&d.mu, &d.stderr}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case ready <- sc.Text():
			default:
			}
		}
	}()
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	select {
	case line := <-ready:
		return line
	case <-d.exited:
		t.Fatalf("secretfs %s exited before it was ready: %v\n%s", args[0], d.err, d.Stderr())
	case <-time.After(20 * time.Second):
		d.kill()
		t.Fatalf("secretfs %s not ready after 20s\n%s", args[0], d.Stderr())
	}
	return ""
}

// terminate sends SIGTERM and waits up to 15s for the daemon to exit. It
// returns the exit error, or an error if the daemon had to be killed.
func (d *daemon) terminate() error {
	select {
	case <-d.exited:
		return d.err
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return d.err
	case <-time.After(15 * time.Second):
		d.kill()
		return errors.New("no exit within 15s of SIGTERM; killed")
	}
}

// stop terminates the daemon and checks it exits 0 with nothing left
// mounted. It retries a lazy unmount a bounded number of times if it must.
func (d *daemon) stop() {
	t := d.t
	t.Helper()
	if err := d.terminate(); err != nil {
		t.Errorf("secretfs after SIGTERM: %v\n%s", err, d.Stderr())
	}
	for i := 0; isMounted(d.Dir) && i < 20; i++ {
		if err := syscall.Unmount(d.Dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// kill ends the daemon with SIGKILL, leaving a dead mount behind.
func (d *daemon) kill() {
	d.cmd.Process.Kill()
	<-d.exited
}

// secretfs runs the binary (get, ls, ...) and returns stdout, stderr and the
// exit code.
func secretfs(t testing.TB, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, secretfsBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("secretfs %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// readDir returns the names in dir, sorted.
func readDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// eventually polls cond every 20ms until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitFor(within, cond) {
		t.Fatalf("%s: not true within %v", what, within)
	}
}

// waitFor polls cond until it holds, or reports that it did not within.
func waitFor(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// wantErrno checks that err is (or wraps) errno.
func wantErrno(t *testing.T, what string, err error, errno syscall.Errno) {
	t.Helper()
	if !errors.Is(err, errno) {
		t.Errorf("%s: error = %v, want %v", what, err, errno)
	}
}
