package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// procStatus reads one field of /proc/PID/status, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int64
			fmt.Sscan(rest, &kb)
			return kb << 10
		}
	}
	t.Fatalf("no %s", field)
	return 0
}

// --mlock locked the whole Go heap reservation (mlockall): 164 MB resident
// instead of 22 MB and 1.8 GB locked for a daemon that held a few values.
// It now keeps values in an arena of locked pages that grows with them:
// with 1,000 values, RSS is at most 20 MB above the same daemon without
// --mlock, and locked memory at most 64 MB.
func TestMlockLocksTheValuesNotTheHeap(t *testing.T) {
	t.Parallel()
	var env []string
	for i := range 1000 {
		env = append(env, fmt.Sprintf("SFS_LCK_%04d=%s", i, strings.Repeat(string(rune('a'+i%26)), 20+i%100)))
	}
	measure := func(args ...string) (rss, lck int64) {
		d := mount(t, env, append([]string{"--env-allow", "SFS_LCK_*"}, args...)...)
		for i := range 1000 {
			name := fmt.Sprintf("SFS_LCK_%04d", i)
			got, err := os.ReadFile(d.Path("env", name))
			if err != nil || len(got) != 20+i%100 {
				t.Fatalf("%s: %d bytes, %v", name, len(got), err)
			}
		}
		pid := d.cmd.Process.Pid
		return procStatus(t, pid, "VmRSS"), procStatus(t, pid, "VmLck")
	}
	rss, lck := measure()
	mrss, mlck := measure("--mlock")
	t.Logf("1,000 values: without --mlock RSS %d MB, locked %d kB; with it RSS %d MB, locked %d kB", rss>>20, lck>>10, mrss>>20, mlck>>10)
	if lck != 0 || mlck == 0 {
		t.Errorf("locked: %d bytes without --mlock, %d with; want none without and some with", lck, mlck)
	}
	if mrss-rss > 20<<20 {
		t.Errorf("RSS with --mlock is %d MB above the daemon without it, want at most 20 MB", (mrss-rss)>>20)
	}
	if mlck > 64<<20 {
		t.Errorf("%d MB locked, want at most 64 MB", mlck>>20)
	}
}

// Without CAP_IPC_LOCK, RLIMIT_MEMLOCK bounds the arena: a value that
// finds no locked memory fails its read with EIO and is counted, and the
// daemon goes on serving the values it holds.
func TestMlockPastTheLimitFailsTheReadNotTheDaemon(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"prlimit", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s (util-linux)", tool)
		}
	}
	// 128 KiB: two chunks, one for values up to 64 bytes (locked at start)
	// and one for those up to 128; a value of 200 bytes needs a third.
	wrap := []string{"prlimit", "--memlock=131072:131072", "--", "setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock"}
	env := []string{"SFS_LIM_SMALL=" + strings.Repeat("s", 10), "SFS_LIM_MID=" + strings.Repeat("m", 100), "SFS_LIM_BIG=" + strings.Repeat("b", 200)}
	d := mountWrapped(t, wrap, env, "--env-allow", "SFS_LIM_*", "--mlock", "--metrics-addr", "127.0.0.1:0")
	if got := procStatus(t, d.cmd.Process.Pid, "VmLck"); got > 128<<10 {
		t.Fatalf("the daemon locked %d bytes under a limit of 128 KiB: it kept CAP_IPC_LOCK", got)
	}
	for _, name := range []string{"SFS_LIM_SMALL", "SFS_LIM_MID"} {
		if _, err := os.ReadFile(d.Path("env", name)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	_, err := os.ReadFile(d.Path("env", "SFS_LIM_BIG"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("a value past RLIMIT_MEMLOCK: %v, want EIO", err)
	}
	if got, err := os.ReadFile(d.Path("env", "SFS_LIM_SMALL")); err != nil || len(got) != 10 {
		t.Errorf("after the failure: %q, %v; want the daemon serving", got, err)
	}
	_, body := httpGet(t, "http://"+metricsAddr(t, d)+"/metrics")
	if got := metricValue(body, "secretfs_locked_failures_total"); got < 1 {
		t.Errorf("secretfs_locked_failures_total = %v, want at least 1", got)
	}
	if strings.Contains(d.Stderr(), strings.Repeat("b", 200)) {
		t.Error("the log holds the value")
	}
}
