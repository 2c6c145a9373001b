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
// watched until the request ends.

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
// answer, EINTR, reaches nobody). Call stop when the request is answered.
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
			if dying(tid) {
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

// sigkill is SIGKILL's bit in /proc's signal masks.
const sigkill = 1 << (9 - 1)

// dying reports whether thread tid has a fatal signal pending (SIGKILL in
// its pending set or its process's), or is gone.
func dying(tid uint32) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return os.IsNotExist(err)
	}
	return fatalPending(data)
}

// fatalPending reports whether a /proc/PID/status shows SIGKILL pending.
func fatalPending(data []byte) bool {
	for _, field := range []string{"SigPnd:", "ShdPnd:"} {
		i := bytes.Index(data, []byte(field))
		if i < 0 {
			continue
		}
		rest := data[i+len(field):]
		if j := bytes.IndexByte(rest, '\n'); j >= 0 {
			rest = rest[:j]
		}
		mask, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 16, 64)
		if err == nil && mask&sigkill != 0 {
			return true
		}
	}
	return false
}
