package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A container, as a runtime makes one: a new mount namespace, with the
// host's directory bound in as rslave (`-v P:/run/secrets:rslave`).
type container struct {
	t   *testing.T
	cmd *exec.Cmd
}

func startContainer(t *testing.T) *container {
	t.Helper()
	cmd := exec.Command("unshare", "-m", "--propagation", "slave", "sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	c := &container{t: t, cmd: cmd}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Wait until the sleep runs in its own namespace.
	self, _ := os.Readlink("/proc/self/ns/mnt")
	eventually(t, 5*time.Second, "the container's namespace", func() bool {
		ns, err := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/mnt")
		return err == nil && ns != self
	})
	return c
}

// run runs a shell command inside the container's mount namespace.
func (c *container) run(script string) (string, error) {
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(c.cmd.Process.Pid), "-m", "sh", "-c", script).CombinedOutput()
	return string(out), err
}

// The README's recipe: secretfs mounts one level below a shared directory
// P; the container gets P with rbind + rslave. A restart of secretfs on the
// host then reaches the container: it reads the new daemon's mount, not a
// dead one.
func TestContainerSeesTheMountAfterARestart(t *testing.T) {
	t.Parallel()
	p := t.TempDir()
	if err := syscall.Mount(p, p, "", syscall.MS_BIND, ""); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(p, syscall.MNT_DETACH) })
	if err := syscall.Mount("", p, "", syscall.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(p, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	b := newTestBackend(t, map[string]string{"k": "first-daemon"})
	first := startDaemon(t, mnt, nil, "--providers", "test", "--test-dir", b.Dir, "--allow-other")

	c := startContainer(t)
	cdir := filepath.Join(t.TempDir(), "run-secrets") // the container's view, at a path of its own
	if err := os.Mkdir(cdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := c.run("mount --rbind " + p + " " + cdir + " && mount --make-rslave " + cdir); err != nil {
		t.Fatalf("binding into the container: %v\n%s", err, out)
	}
	read := filepath.Join(cdir, "mnt", "test", "k")
	if out, err := c.run("cat " + read); err != nil || out != "first-daemon" {
		t.Fatalf("in the container: %q, %v", out, err)
	}

	// Restart secretfs on the host.
	if err := first.terminate(); err != nil {
		t.Fatalf("first daemon: %v", err)
	}
	b.write("k", "second-daemon")
	second := mountAt(t, mnt, nil, "--providers", "test", "--test-dir", b.Dir, "--allow-other")
	if got, err := os.ReadFile(second.Path("test", "k")); err != nil || string(got) != "second-daemon" {
		t.Fatalf("on the host after the restart: %q, %v", got, err)
	}
	var out string
	eventually(t, 5*time.Second, "the container reads the new daemon's mount", func() bool {
		var err error
		out, err = c.run("cat " + read)
		return err == nil && out == "second-daemon"
	})
	if strings.Contains(out, "not connected") {
		t.Errorf("the container sees a dead mount: %s", out)
	}
}
