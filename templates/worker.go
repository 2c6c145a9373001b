package templates

import (
	"bytes"
	"cmp"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/secretfs/secretfs/resolver"
)

// A render worker is a bound that holds whatever a template's functions
// do. Enumerating costly functions caught the known bombs, and each review
// found another; a render in a process of its own, under rlimits and a
// deadline, cannot take the daemon's memory or CPU, whatever it does.
// Every render runs in one, the operator's templates too:
//
//   - the daemon fetches the values (as ever, through the engine), starts
//     `secretfs render-worker`, and passes it the template's text and the
//     values on a pipe;
//   - the worker makes itself non-dumpable, takes RLIMIT_DATA (WorkerMemory:
//     a Go program cannot start under a small RLIMIT_AS), RLIMIT_CPU
//     (WorkerCPU), GOMEMLIMIT and no core files before it reads a value,
//     renders, and writes the output back;
//   - the daemon reads at most MaxSize of output (and a bounded answer),
//     and kills the worker at WorkerWall or when the render's context
//     ends.
//
// A worker that dies (out of memory, out of CPU, killed at the deadline) is
// ErrLimit. Within the worker, limits.go ends loops and large output early
// with a clear message.

// WorkerCommand is the hidden command secretfs runs itself as to render
// one template: `secretfs render-worker`.
const WorkerCommand = "render-worker"

// Limits of a render worker.
const (
	WorkerMemory = 512 << 20
	workerGoMem  = "256MiB"
	WorkerCPU    = 4 // seconds
	WorkerWall   = 4 * time.Second
	// maxAnswer bounds the worker's answer: the output and a message.
	maxAnswer = MaxSize + 64<<10
)

// worker is the command renders run in; with none, a render fails.
var worker atomic.Pointer[[]string]

// UseWorker makes every render run in a worker process started with
// command (secretfs render-worker); with nil, every render fails.
func UseWorker(command []string) {
	if command == nil {
		worker.Store(nil)
		return
	}
	c := append([]string{}, command...)
	worker.Store(&c)
}

// job is what the daemon sends a worker: the values by reference, as the
// daemon's parse found them (the worker matches them to its own by name,
// never by position).
type job struct {
	Name, Source, Text string
	Untrusted          bool
	Refs               []string
	Values             [][]byte
	Failed             []bool // the value could not be read
}

// answer is what a worker sends back.
type answer struct {
	Out  []byte
	Kind string // "", "secret", "limit", "render", "canceled"
	Ref  string // for "secret": which reference
	Msg  string // the error, as withheld (no value)
}

// errFailed stands in the worker for a value that could not be read.
var errFailed = errors.New("not read")

// renderInWorker renders t with vals in a worker started with command.
func (t *Template) renderInWorker(ctx context.Context, command []string, vals []fetched) ([]byte, error) {
	j := job{Name: t.Name, Source: t.Source, Text: t.text, Untrusted: t.untrusted,
		Values: make([][]byte, len(vals)), Failed: make([]bool, len(vals))}
	total := 0
	for i, v := range vals {
		// A value no template may hold is refused here, before the daemon
		// copies it: the worker would refuse it anyway.
		if total += len(v.v); len(v.v) > MaxSize || total > maxValues {
			return nil, fmt.Errorf("template %s: %w: %s: its values take more than %d bytes (%d in all)", t.Name, ErrLimit, t.refs[i], MaxSize, maxValues)
		}
		j.Refs = append(j.Refs, t.refs[i].String())
		j.Values[i], j.Failed[i] = v.v, v.err != nil
	}
	var enc bytes.Buffer
	if err := gob.NewEncoder(&enc).Encode(&j); err != nil {
		return nil, fmt.Errorf("template %s: %w", t.Name, err)
	}
	in := enc.Bytes()
	defer clear(in) // the values
	ctx, cancel := context.WithTimeout(ctx, WorkerWall)
	defer cancel()
	cmd := osexec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Env = []string{"GOMEMLIMIT=" + workerGoMem, "GOTRACEBACK=none"}
	cmd.Stdin = bytes.NewReader(in)
	out := &limitedBuffer{max: maxAnswer}
	defer func() { clear(out.b) }() // the render
	cmd.Stdout = out
	cmd.Stderr = io.Discard
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("template %s: %w: the render took longer than %v", t.Name, ErrLimit, WorkerWall)
		}
		return nil, fmt.Errorf("template %s: %w", t.Name, ctx.Err())
	}
	if out.over {
		return nil, fmt.Errorf("template %s: %w: output of more than %d bytes", t.Name, ErrLimit, MaxSize)
	}
	var exit *osexec.ExitError
	if errors.As(err, &exit) {
		// Out of memory, out of CPU: the bound held.
		return nil, fmt.Errorf("template %s: %w: the render worker ran out of its limits (%v)", t.Name, ErrLimit, err)
	}
	if err != nil {
		// Not the template's doing: secretfs could not run its worker.
		return nil, fmt.Errorf("template %s: starting the render worker: %v", t.Name, err)
	}
	var a answer
	if err := gob.NewDecoder(bytes.NewReader(out.b)).Decode(&a); err != nil {
		return nil, fmt.Errorf("template %s: %w: no answer from the render worker", t.Name, ErrRender)
	}
	switch a.Kind {
	case "":
		return a.Out, nil
	case "secret":
		i := slices.IndexFunc(t.refs, func(r resolver.Reference) bool { return r.String() == a.Ref })
		if i < 0 || vals[i].err == nil {
			return nil, fmt.Errorf("template %s: %w: a bad answer from the render worker", t.Name, ErrRender)
		}
		return nil, fmt.Errorf("template %s: %w", t.Name, &secretError{ref: t.refs[i], err: vals[i].err})
	case "limit":
		return nil, &workerError{msg: a.Msg, err: ErrLimit}
	case "canceled":
		return nil, &workerError{msg: a.Msg, err: context.Canceled}
	default:
		return nil, &workerError{msg: a.Msg, err: ErrRender}
	}
}

// workerError is an error a worker reported: its message, as withheld
// there, and its kind.
type workerError struct {
	msg string
	err error
}

func (e *workerError) Error() string { return e.msg }
func (e *workerError) Unwrap() error { return e.err }

// ServeWorker is the render worker: it bounds itself, reads one job from
// in, renders it and writes the answer to out. It returns the exit code.
func ServeWorker(in io.Reader, out io.Writer) int {
	// Before any value is read: no core, no ptrace by the same uid, and
	// bounds the template cannot lift.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	for _, l := range []struct {
		res int
		max uint64
	}{
		{unix.RLIMIT_CORE, 0},
		{unix.RLIMIT_DATA, WorkerMemory},
		{unix.RLIMIT_CPU, WorkerCPU},
		{unix.RLIMIT_FSIZE, 0},
	} {
		if err := unix.Setrlimit(l.res, &unix.Rlimit{Cur: l.max, Max: l.max}); err != nil {
			fmt.Fprintln(os.Stderr, "render-worker: setrlimit:", err)
			return 1
		}
	}
	debug.SetMemoryLimit(256 << 20)
	var j job
	if err := gob.NewDecoder(io.LimitReader(in, 2<<30)).Decode(&j); err != nil {
		fmt.Fprintln(os.Stderr, "render-worker: reading the job:", err)
		return 1
	}
	var t *Template
	var err error
	if j.Untrusted {
		t, err = ParseUntrusted(j.Name, j.Source, j.Text)
	} else {
		t, err = Parse(j.Name, j.Source, j.Text)
	}
	var a answer
	if err == nil && (len(t.refs) != len(j.Refs) || len(j.Refs) != len(j.Values) || len(j.Refs) != len(j.Failed)) {
		err = fmt.Errorf("template %s: %d values for %d references", j.Name, len(j.Values), len(t.refs))
	}
	// Values by reference: the worker's own order of references need not
	// be the daemon's.
	vals := make([]fetched, len(t.refs))
	for i, ref := range t.refs {
		k := slices.Index(j.Refs, ref.String())
		if err != nil || k < 0 {
			err = cmp.Or(err, fmt.Errorf("template %s: no value for %s", j.Name, ref))
			break
		}
		vals[i] = fetched{v: j.Values[k]}
		if j.Failed[k] {
			vals[i].err = errFailed
		}
	}
	if err != nil {
		a = answer{Kind: "render", Msg: err.Error()}
	} else {
		a.Out, err = t.execute(context.Background(), vals)
		var se *secretError
		switch {
		case err == nil:
		case errors.As(err, &se):
			a.Kind, a.Ref = "secret", se.ref.String()
		case errors.Is(err, ErrLimit):
			a.Kind, a.Msg = "limit", err.Error()
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			a.Kind, a.Msg = "canceled", err.Error()
		default:
			a.Kind, a.Msg = "render", err.Error()
		}
	}
	if err := gob.NewEncoder(out).Encode(&a); err != nil {
		return 1
	}
	return 0
}
