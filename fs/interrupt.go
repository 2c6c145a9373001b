package fs

// Interrupts. Once the daemon has read a request, the kernel waits for its
// answer: a signal the reader catches makes the kernel send FUSE_INTERRUPT
// (go-fuse then cancels the request's context), and answering EINTR then
// fails an open that a program with SA_RESTART handlers (an interval timer,
// SIGCHLD in a server, the Go runtime's preemption) never retries. So a
// request keeps its own budget whatever the signals, and ends early only
// for a reader that is dying: one with a fatal signal pending, which the
// kernel marks by SIGKILL in every thread's pending set. A later fatal
// signal brings no second FUSE_INTERRUPT, so after the first the reader is
// watched until the request ends. Core-dumping signals (SIGQUIT, SIGABRT,
// SIGSEGV) are not turned into SIGKILL: a pending signal that the reader
// neither catches, ignores nor blocks, and whose default action ends it,
// counts as dying too.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// dyingPoll is how often a reader that interrupted its request is checked
// for a fatal signal.
const dyingPoll = 50 * time.Millisecond

// detach returns a context for the engine calls a request makes: not
// canceled by FUSE_INTERRUPT, only when the reader is dying (then the
// answer, EINTR, reaches nobody). A reader the daemon cannot see (another
// PID namespace reports PID 0; /proc may be hidden) is taken at its word:
// its interrupt cancels, as before. Call stop when the request is answered.
func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	out, cancel := context.WithCancel(context.WithoutCancel(ctx))
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return out, cancel
	}
	tid := caller.Pid // the thread that made the request
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTicker(dyingPoll)
		defer t.Stop()
		for {
			if d, known := dying(tid); d || !known {
				cancel()
				return
			}
			select {
			case <-out.Done():
				return
			case <-t.C:
			}
		}
	})
	return out, func() { stop(); cancel() }
}

// dying reports whether thread tid is dying: a fatal signal pending, or
// gone. known is false when its status cannot be read (PID 0 from another
// PID namespace, a /proc that hides it).
func dying(tid uint32) (dying, known bool) {
	if tid == 0 {
		return false, false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	switch {
	case os.IsNotExist(err):
		return true, true
	case err != nil:
		return false, false
	}
	return fatalPending(data), true
}

// notFatal are the signals whose default action does not end a process:
// SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH.
const notFatal = 1<<(17-1) | 1<<(18-1) | 1<<(19-1) | 1<<(20-1) | 1<<(21-1) | 1<<(22-1) | 1<<(23-1) | 1<<(28-1)

// fatalPending reports whether a /proc/PID/status shows a signal pending
// that will end the process: SIGKILL (the kernel sets it in every thread
// for a fatal signal), or a signal neither caught, ignored nor blocked
// whose default action ends the process (SIGQUIT, SIGABRT, SIGSEGV and
// other core-dumping signals are not turned into SIGKILL).
func fatalPending(data []byte) bool {
	field := func(name string) uint64 {
		i := bytes.Index(data, []byte(name))
		if i < 0 {
			return 0
		}
		rest := data[i+len(name):]
		if j := bytes.IndexByte(rest, '\n'); j >= 0 {
			rest = rest[:j]
		}
		v, _ := strconv.ParseUint(string(bytes.TrimSpace(rest)), 16, 64)
		return v
	}
	pending := field("SigPnd:") | field("ShdPnd:")
	if pending&sigkill != 0 {
		return true
	}
	deadly := pending &^ field("SigCgt:") &^ field("SigIgn:") &^ field("SigBlk:") &^ notFatal
	return deadly != 0
}

// sigkill is SIGKILL's bit in /proc's signal masks.
const sigkill = 1 << (9 - 1)
