package exec

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ReaperCommand is the hidden command secretfs runs itself as to run a
// provider's program under a reaper: `secretfs exec-reaper PROGRAM ARG...`.
const ReaperCommand = "exec-reaper"

// Reap runs a program as a child subreaper, and returns the exit code to
// exit with. A process group does not hold a program's descendants: one
// that calls setsid leaves it, and could write into the output after the
// program exited. Descendants of a subreaper are reparented to it, setsid
// or not, when their parent dies; so when the program exits (or on SIGTERM:
// the daemon's deadline), every process left below the reaper is killed,
// and the reaper exits only once none is left. The output pipes then close
// with nothing written after the program's exit.
func Reap(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "exec-reaper: no program")
		return 127
	}
	// no_new_privs belongs to a thread, and a child inherits its forking
	// thread's: the program is started from this one.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "exec-reaper: subreaper:", err)
		return 127
	}
	// The daemon gone, nobody reads the output: end everything.
	unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0)
	// No descendant gains privileges (a setuid program): the reaper can
	// always kill what is below it.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "exec-reaper: no_new_privs:", err)
		return 127
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	cmd := osexec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "exec-reaper:", err)
		return 127
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-stop:
		cmd.Process.Kill()
		err = <-done
	}
	killDescendants()
	var ee *osexec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		return 127
	}
}

// maxRounds bounds the rounds of killDescendants, and killWithin its
// time: each round kills the children the reaper has, whose own children
// are then reparented to it.
const (
	maxRounds  = 1000
	killWithin = 2 * time.Second
)

// killDescendants kills every process below this one and reaps it, round
// by round, until none is left, or its time is up: it never waits on one
// it could not kill.
func killDescendants() {
	self := os.Getpid()
	deadline := time.Now().Add(killWithin)
	for range maxRounds {
		kids := childrenOf(self)
		if len(kids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, k := range kids {
			unix.Kill(k, unix.SIGKILL)
		}
		// Reap what died; a round that reaps nothing waits a little.
		reaped := false
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			reaped = true
		}
		if !reaped {
			time.Sleep(time.Millisecond)
		}
	}
}

// childrenOf lists the processes whose parent is pid (from /proc: the
// children files need CONFIG_PROC_CHILDREN, which not every kernel has).
func childrenOf(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The parent is the second field after the command, which may hold
		// spaces and parentheses.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		var state byte
		var ppid int
		if _, err := fmt.Sscanf(string(data[i+1:]), " %c %d", &state, &ppid); err == nil && ppid == pid {
			out = append(out, n)
		}
	}
	return out
}
