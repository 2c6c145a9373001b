package integration

import (
	"net"
	"os"
	"sync"
	"testing"
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

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
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
