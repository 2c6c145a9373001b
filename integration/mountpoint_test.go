package integration

// The mountpoint's edge: a mountpoint given as a symlink, a daemon that is
// stopped.

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A symlink given as the mountpoint is resolved once: changing the link
// later redirects neither the unmount (which once unmounted whatever the
// link pointed to, then hung past the grace) nor status.
func TestSymlinkMountpointIsResolvedOnce(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	realA, realB, link := filepath.Join(base, "a"), filepath.Join(base, "b"), filepath.Join(base, "link")
	for _, d := range []string{realA, realB} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", realB, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs to stand for another filesystem: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(realB, unix.MNT_DETACH) })
	if err := os.Symlink(realA, link); err != nil {
		t.Fatal(err)
	}
	b := newTestBackend(t, map[string]string{"k": "v"})
	d := &daemon{t: t, Dir: realA}
	line := d.start([]string{"mount", "--providers", "test", "--test-dir", b.Dir, "--shutdown-grace", "20s", link}, nil)
	t.Cleanup(d.stop)
	if !strings.Contains(line, "mounted "+realA) {
		t.Errorf("ready line %q, want the resolved mountpoint %s", line, realA)
	}
	for _, p := range []string{link, realA} {
		out, stderr, code := secretfs(t, nil, "status", p)
		if code != 0 || !strings.Contains(out, "mountpoint: "+realA) {
			t.Errorf("status %s: exit %d, %q %q; want the mount at %s", p, code, out, stderr, realA)
		}
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(realB, link); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := d.terminate(); err != nil {
		t.Errorf("SIGTERM after the link changed: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("the daemon took %v to exit after SIGTERM, want well within its grace", el)
	}
	if isMounted(realA) {
		t.Errorf("%s is still mounted", realA)
	}
	if !isMounted(realB) {
		t.Errorf("the filesystem the link now points to (%s) was unmounted", realB)
	}
}

// status and refresh of a stopped daemon once waited 60 s.
func TestStoppedDaemonStatusAnswersWithin2s(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v"})
	d := testMount(t, b)
	d.cmd.Process.Signal(syscall.SIGSTOP)
	defer d.cmd.Process.Signal(syscall.SIGCONT)
	for _, args := range [][]string{{"status", d.Dir}, {"refresh", d.Dir, "test:k"}} {
		start := time.Now()
		_, stderr, code := secretfs(t, nil, args...)
		if code == 0 || !strings.Contains(stderr, "does not answer") {
			t.Errorf("%s of a stopped daemon: exit %d, %q; want a failure that says it does not answer", args[0], code, stderr)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("%s of a stopped daemon took %v, want about 2s", args[0], el)
		}
	}
}

// A directory above the mountpoint renamed and replaced by a symlink (by
// whoever may write there) does not redirect the unmount either: the mount
// is found by its ID.
func TestParentSwappedForASymlinkDoesNotRedirectTheUnmount(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	app, other := filepath.Join(base, "app"), filepath.Join(base, "other")
	for _, d := range []string{filepath.Join(app, "mnt"), filepath.Join(other, "mnt")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", filepath.Join(other, "mnt"), "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs to stand for another filesystem: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(other, "mnt"), unix.MNT_DETACH) })
	b := newTestBackend(t, map[string]string{"k": "v"})
	d := mountAt(t, filepath.Join(app, "mnt"), nil, "--providers", "test", "--test-dir", b.Dir)
	if err := os.Rename(app, app+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, app); err != nil {
		t.Fatal(err)
	}
	d.Dir = filepath.Join(app+".old", "mnt") // where the mount is now, for the harness
	mountpoints.Store(d.Dir, true)
	start := time.Now()
	if err := d.terminate(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("the daemon took %v to exit", el)
	}
	if !isMounted(filepath.Join(other, "mnt")) {
		t.Error("the filesystem the swapped path leads to was unmounted")
	}
	if isMounted(d.Dir) {
		t.Errorf("the secretfs mount (now at %s) is still mounted", d.Dir)
	}
}
