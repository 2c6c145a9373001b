package child

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// Options configures Run.
type Options struct {
	Argv []string // the program (found on PATH) and its arguments
	// Base is the environment the secrets are added to (the caller's, or
	// PATH alone); Override lets a secret replace a variable of it.
	Base     []string
	Override bool
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
	// Restart restarts the program when the environment changes; without
	// it a change is only logged.
	Restart bool
	// StopSignal (default SIGTERM) asks the program to stop for a restart;
	// SIGKILL follows after StopTimeout (default 10 s).
	StopSignal  syscall.Signal
	StopTimeout time.Duration
	// Debounce: changes that come within it of each other are one restart
	// (default 1 s).
	Debounce time.Duration
	// Relist is how often the --env-from directories are listed again for
	// new secrets (default one minute).
	Relist time.Duration
	// Budget bounds reading the environment again (default 30 s).
	Budget time.Duration
	Logger *slog.Logger
}

// forwarded are the signals passed on to the program.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

// fromTerminal are the signals a terminal sends to its whole foreground
// process group: the program, in that group too, has had it already.
var fromTerminal = []os.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGWINCH}

// Run runs the program with env added to its environment until it exits,
// and returns its exit status (128+N for a signal N). vars and dirs are
// what env was made of (read again on a change). An error means it could
// not be started.
func Run(eng Engine, env Env, vars []Var, dirs []Dir, opts Options) (int, error) {
	if opts.StopSignal == 0 {
		opts.StopSignal = syscall.SIGTERM
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	if opts.Debounce <= 0 {
		opts.Debounce = time.Second
	}
	if opts.Relist <= 0 {
		opts.Relist = time.Minute
	}
	if opts.Budget <= 0 {
		opts.Budget = 30 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path, err := exec.LookPath(opts.Argv[0])
	if err != nil {
		return 0, err
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	// Changes of what the environment is made of, while it runs.
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	var (
		mu      sync.Mutex
		watched []resolver.Reference // guarded by mu
	)
	var releases []func()
	defer func() {
		for _, r := range releases {
			r()
		}
	}()
	hold := func(e Env) {
		for _, r := range releases {
			r()
		}
		releases = releases[:0]
		keys := e.keys()
		for _, k := range keys {
			releases = append(releases, eng.Hold(k))
		}
		mu.Lock()
		watched = keys
		mu.Unlock()
	}
	hold(env)
	eng.OnChange(func(c cache.Change) {
		mu.Lock()
		hit := slices.Contains(watched, c.Ref)
		mu.Unlock()
		if hit {
			poke()
		}
	})
	var relist <-chan time.Time
	if len(dirs) > 0 {
		t := time.NewTicker(opts.Relist)
		defer t.Stop()
		relist = t.C
	}

	start := func(environ []string) (*exec.Cmd, <-chan struct{}, error) {
		// The program dies with secretfs (SIGKILL included): its death
		// signal fires when the thread that started it ends, so that
		// thread is held, locked, until the program has exited.
		cmd := &exec.Cmd{Path: path, Args: opts.Argv, Env: environ, Stdin: opts.Stdin, Stdout: opts.Stdout, Stderr: opts.Stderr,
			SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}
		exited := make(chan struct{})
		started := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with this goroutine, after the program
			if err := cmd.Start(); err != nil {
				started <- err
				return
			}
			started <- nil
			cmd.Wait()
			close(exited)
		}()
		if err := <-started; err != nil {
			return nil, nil, err
		}
		return cmd, exited, nil
	}
	environ, err := Environ(opts.Base, env, opts.Override)
	if err != nil {
		return 0, err
	}
	cmd, exited, err := start(environ)
	if err != nil {
		return 0, err
	}
	sum := env.sum()
	var settle <-chan time.Time
	for {
		select {
		case <-exited:
			return status(cmd.ProcessState), nil
		case sig := <-sigs:
			forward(cmd, sig)
		case <-relist:
			poke()
		case <-changed:
			// The first change starts the wait; later ones (a relist,
			// steady rotations) do not push it back.
			if settle == nil {
				settle = time.After(opts.Debounce)
			}
		case <-settle:
			settle = nil
			ctx, cancel := context.WithTimeout(context.Background(), opts.Budget)
			next, err := Resolve(ctx, eng, vars, dirs)
			cancel()
			if err != nil {
				log.Warn("a secret of the environment could not be read again; the program keeps running as it is", "error", err)
				continue
			}
			if next.sum() == sum {
				continue
			}
			if !opts.Restart {
				log.Warn("a secret of the environment changed; the program keeps the old environment (--restart-on-change restarts it)", "variables", strings.Join(diff(env, next), " "))
				env, sum = next, next.sum()
				hold(next)
				continue
			}
			environ, err := Environ(opts.Base, next, opts.Override)
			if err != nil {
				log.Warn("the new environment cannot be made; the program keeps running as it is", "error", err)
				continue
			}
			log.Info("a secret of the environment changed: restarting the program", "variables", strings.Join(diff(env, next), " "), "stop_signal", opts.StopSignal.String())
			if gone, quit := stop(cmd, exited, opts.StopSignal, opts.StopTimeout, sigs); !gone || quit {
				return status(cmd.ProcessState), nil
			}
			env, sum = next, next.sum()
			hold(next)
			if cmd, exited, err = start(environ); err != nil {
				return 0, err
			}
		}
	}
}

// stop asks the program to stop with sig, kills it after timeout, and
// waits for it; gone is false when it had exited already on its own.
// Signals that come meanwhile go to the program as ever; quit says one of
// them asked secretfs to end (TERM, INT, QUIT): then no program is started
// again.
func stop(cmd *exec.Cmd, exited <-chan struct{}, sig syscall.Signal, timeout time.Duration, sigs <-chan os.Signal) (gone, quit bool) {
	select {
	case <-exited:
		return false, false
	default:
	}
	cmd.Process.Signal(sig)
	deadline := time.After(timeout)
	for {
		select {
		case <-exited:
			return true, quit
		case s := <-sigs:
			if slices.Contains(ending, s) {
				quit = true
			}
			forward(cmd, s)
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			return true, quit
		}
	}
}

// forward passes sig on to the program, unless the terminal sent it to the
// program too.
func forward(cmd *exec.Cmd, sig os.Signal) {
	if slices.Contains(fromTerminal, sig) && foreground() {
		return
	}
	cmd.Process.Signal(sig)
}

// ending are the signals that ask secretfs to end, not to pass something
// on: during a restart, they end it with the program it is stopping.
var ending = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT}

// diff names the variables whose value differs between a and b.
func diff(a, b Env) []string {
	var out []string
	for _, n := range b.Names {
		if v, ok := a.Vals[n]; !ok || string(v) != string(b.Vals[n]) {
			out = append(out, n)
		}
	}
	for _, n := range a.Names {
		if _, ok := b.Vals[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// status is an exit status as a shell gives it: the code, or 128+N for a
// signal N.
func status(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// foreground reports whether this process's group is its terminal's
// foreground group: a signal the terminal sends (Ctrl-C) reaches the
// whole group, the program included.
func foreground() bool {
	tty, err := os.Open("/dev/tty")
	if err != nil {
		return false
	}
	defer tty.Close()
	pgrp, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}
