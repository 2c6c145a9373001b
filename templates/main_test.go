package templates

import (
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"testing"
)

// TestMain starts every render in a real worker: secretfs itself, built
// without the race detector (a worker's bounds are its process's; the
// daemon's side of a render runs in this test binary, under -race if
// asked). Where no go command is at hand, the test binary serves as its
// own worker.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == WorkerCommand {
		os.Exit(ServeWorker(os.Stdin, os.Stdout))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "secretfs-worker-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "secretfs")
	build := osexec.Command("go", "build", "-o", bin, "github.com/secretfs/secretfs/cmd/secretfs")
	if out, err := build.CombinedOutput(); err == nil {
		UseWorker([]string{bin, WorkerCommand})
	} else {
		fmt.Fprintf(os.Stderr, "templates: building a worker: %v\n%s\nthe test binary renders instead\n", err, out)
		UseWorker([]string{os.Args[0], WorkerCommand})
	}
	return m.Run()
}
