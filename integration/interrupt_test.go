package integration

// Signals and requests: a reader's caught signal never fails its request
// (EINTR); a reader killed during one is gone at once.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// timerReader stats, opens and reads each path with a 2 ms interval timer
// whose handler is installed with SA_RESTART, as servers reloading their
// certificates do; it prints "ok" or the call that failed.
const timerReader = `#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks;
static void on_alarm(int s) { (void)s; ticks++; }

int main(int argc, char **argv) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {{0, 2000}, {0, 2000}};
	setitimer(ITIMER_REAL, &it, NULL);
	for (int i = 1; i < argc; i++) {
		struct stat st;
		char buf[256];
		if (i % 2 == 1 && stat(argv[i], &st) < 0) { printf("stat %s: %s\n", argv[i], strerror(errno)); return 1; }
		int fd = open(argv[i], O_RDONLY);
		if (fd < 0) { printf("open %s: %s\n", argv[i], strerror(errno)); return 1; }
		if (read(fd, buf, sizeof buf) < 0) { printf("read %s: %s\n", argv[i], strerror(errno)); return 1; }
		close(fd);
	}
	printf("ok after %d ticks\n", (int)ticks);
	return 0;
}
`

func buildC(t *testing.T, name, src string) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc) to build a C reader with")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name+".c"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	if out, err := exec.Command(cc, "-O2", "-o", bin, filepath.Join(dir, name+".c")).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	return bin
}

// Failure 1 of the filesystem's edge: 4 of 4 cold opens failed with
// "Interrupted system call" for a C reader with a 2 ms interval timer.
func TestCaughtSignalsNeverFailARequest(t *testing.T) {
	t.Parallel()
	reader := buildC(t, "timer-reader", timerReader)
	files := map[string]string{}
	var paths []string
	for _, k := range []string{"slow/a", "slow/b", "slow/c", "slow/d"} {
		files[k] = "value of " + k
	}
	b := newTestBackend(t, files)
	for _, audit := range []bool{false, true} {
		args := []string{"--timeout", "3s"}
		if audit {
			args = append(args, "--audit-log", filepath.Join(t.TempDir(), "audit.jsonl"))
		}
		d := testMount(t, b, args...)
		paths = paths[:0]
		for _, k := range []string{"slow/a", "slow/b", "slow/c", "slow/d"} {
			paths = append(paths, d.Path("test", k))
		}
		out, err := exec.Command(reader, paths...).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "ok") {
			t.Errorf("audit %v: a reader with an interval timer: %v: %s", audit, err, out)
		}
	}
}

// A reader killed during a slow backend call is gone at once: the daemon
// answers a dying reader's request without waiting for the backend.
func TestKilledReaderIsGoneAtOnce(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"slower/a": "a", "slower/b": "b", "slower/c": "c"})
	d := testMount(t, b, "--timeout", "10s")
	for _, c := range []struct {
		key string
		sig syscall.Signal
	}{{"slower/a", syscall.SIGKILL}, {"slower/b", syscall.SIGTERM}, {"slower/c", syscall.SIGQUIT}} {
		cmd := exec.Command("cat", d.Path("test", c.key))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		time.Sleep(300 * time.Millisecond) // the lookup waits on the backend
		start := time.Now()
		cmd.Process.Signal(c.sig)
		select {
		case <-done:
			if el := time.Since(start); el > 500*time.Millisecond {
				t.Errorf("cat killed by %v during a 5 s backend call exited after %v, want within 0.5s", c.sig, el)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("cat killed by %v during a 5 s backend call: not gone after 10s", c.sig)
			cmd.Process.Kill()
			<-done
		}
	}
}
