// Command secretfs mounts secrets as files.
//
//	secretfs mount [flags] MOUNTPOINT   serve /MOUNTPOINT/PROVIDER/KEY[@VERSION][#FIELD]
//	secretfs get [flags] REF            print one secret, PROVIDER:KEY[@VERSION][#FIELD]
//	secretfs ls [flags] PROVIDER:[DIR]  list what a provider holds
//	secretfs csi-provider --endpoint SOCK  a provider of the Secrets Store CSI driver
//	secretfs version
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/secretfs/secretfs/providers/exec"
	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

// Exit codes, one per kind of failure, so that scripts can tell them apart.
const (
	exitOK          = 0
	exitError       = 1 // anything else
	exitUsage       = 2 // bad command line
	exitNotFound    = 3 // no such secret, version or field
	exitInvalidRef  = 4 // malformed reference or unknown provider
	exitPermission  = 5 // the backend refused
	exitUnavailable = 6 // the backend is down or did not answer in time
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == exec.ReaperCommand {
		// An exec provider's program, run under a reaper (see exec.Reap).
		os.Exit(exec.Reap(args[1:]))
	}
	if len(args) > 0 && args[0] == templates.WorkerCommand {
		// One template's render, in a process of its own (see templates).
		os.Exit(templates.ServeWorker(os.Stdin, os.Stdout))
	}
	// Every render runs in a worker: secretfs itself, as render-worker.
	if self, err := selfExe(); err == nil {
		templates.UseWorker([]string{self, templates.WorkerCommand})
	} else {
		fmt.Fprintln(os.Stderr, "secretfs: templates cannot render (no render worker):", err)
	}
	if filepath.Base(os.Args[0]) == helperName {
		args = append([]string{"mount-helper"}, args...)
	}
	err := run(args, os.Stdout, os.Stderr)
	var ce *childExit
	if err != nil && !errors.As(err, &ce) {
		fmt.Fprintln(os.Stderr, "secretfs:", err)
	}
	os.Exit(exitCode(err))
}

func exitCode(err error) int {
	var ce *childExit
	if errors.As(err, &ce) {
		return ce.code // secretfs exec: the command's own
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	var de *deniedError
	if errors.As(err, &de) {
		return exitPermission
	}
	switch resolver.KindOf(err) {
	case resolver.KindOK:
		return exitOK
	case resolver.KindNotFound:
		return exitNotFound
	case resolver.KindInvalid:
		return exitInvalidRef
	case resolver.KindPermission:
		return exitPermission
	case resolver.KindUnavailable:
		return exitUnavailable
	default:
		return exitError
	}
}

// usageError is a bad command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg + " (see secretfs --help)" }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

const topUsageTail = `
Run 'secretfs COMMAND --help' for a command's flags. Every flag can also be
set in the environment as SECRETFS_<FLAG>, e.g. SECRETFS_TTL=1m.

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 invalid reference,
5 permission denied, 6 backend unavailable.
`

// topUsage lists the commands.
func topUsage() string {
	var b strings.Builder
	b.WriteString("secretfs mounts secrets as files.\n\nUsage:\n")
	for _, c := range commands() {
		if !c.hidden {
			fmt.Fprintf(&b, "  %-37s %s\n", "secretfs "+c.name+" "+c.args, c.summary)
		}
	}
	b.WriteString(topUsageTail)
	return b.String()
}

// run is the whole program; main only maps its error to an exit code.
func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage())
		return usagef("no command given")
	}
	switch args[0] {
	case "--version":
		args[0] = "version"
	case "help", "-h", "--help":
		fmt.Fprint(stdout, topUsage())
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	return usagef("unknown command %q", args[0])
}

// selfExe is how secretfs runs itself (a render worker, an exec
// provider's reaper, a volume's mount): /proc/self/exe, the very binary
// running, even once a package upgrade has replaced the file; else its
// path.
func selfExe() (string, error) {
	const self = "/proc/self/exe"
	if _, err := os.Stat(self); err == nil {
		return self, nil
	}
	return os.Executable()
}
