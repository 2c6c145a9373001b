package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	stopMu   sync.Mutex
	stoppers []func() // guarded by stopMu; run by TestMain after the tests
)

// atExit registers a function that stops a backend when the suite ends.
func atExit(f func()) {
	stopMu.Lock()
	defer stopMu.Unlock()
	stoppers = append(stoppers, f)
}

func stopBackends() {
	stopMu.Lock()
	defer stopMu.Unlock()
	for i := len(stoppers) - 1; i >= 0; i-- {
		stoppers[i]()
	}
	stoppers = nil
}

// sharedBackend is a backend started once for the whole suite, on first use.
type sharedBackend[T any] struct {
	once sync.Once
	val  T
	err  error
}

// get starts the backend the first time and fails every test that needs it
// if that did not work.
func (s *sharedBackend[T]) get(t testing.TB, start func() (T, error)) T {
	t.Helper()
	s.once.Do(func() { s.val, s.err = start() })
	if s.err != nil {
		t.Fatalf("shared backend: %v", s.err)
	}
	return s.val
}

// pickPort returns a loopback port that was free a moment ago.
func pickPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is a backend server started by the suite.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// startProcess starts cmd (killed with the test binary, should that die
// first) and waits until healthURL answers 200.
func startProcess(name string, cmd *exec.Cmd, healthURL string) (*process, error) {
	p := &process{cmd: cmd, done: make(chan struct{})}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	if err := waitHealthy(healthURL, p.done); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// Stop ends the process (SIGTERM, then SIGKILL after 10s) and waits for it.
func (p *process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// portOr returns port, or a free one when it is 0.
func portOr(port int) (int, error) {
	if port != 0 {
		return port, nil
	}
	return pickPort()
}

// waitHealthy polls url until it answers 200, the process ends (done is
// closed) or 30s pass.
func waitHealthy(url string, done <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		select {
		case <-done:
			return fmt.Errorf("exited during start-up")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy after 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// backendBin returns the path in the environment variable name, and fails
// the test (never skips) when it is not set: `make test` always sets it.
func backendBin(t testing.TB, name string) string {
	t.Helper()
	p := os.Getenv(name)
	if p == "" {
		t.Fatalf("%s is not set: run the suite with `make test`, which builds the backends", name)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}
