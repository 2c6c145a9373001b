package csi

import (
	"os"
	"testing"

	"github.com/secretfs/secretfs/templates"
)

// TestMain makes the test binary a render worker, as secretfs is: every
// template of a class renders in one.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == templates.WorkerCommand {
		os.Exit(templates.ServeWorker(os.Stdin, os.Stdout))
	}
	templates.UseWorker([]string{os.Args[0], templates.WorkerCommand})
	os.Exit(m.Run())
}
