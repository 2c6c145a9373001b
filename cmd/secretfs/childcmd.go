package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	osexec "os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/child"
	"github.com/secretfs/secretfs/resolver"
)

const execUsage = `Usage: secretfs exec [flags] -- COMMAND [ARG...]

Runs COMMAND with secrets in its environment and exits with its status:

  secretfs exec --env DB_PASSWORD=aws:prod/db#password --env-from aws:prod/app/ -- ./server

--env NAME=REF sets one variable; --env-from PROVIDER:DIR/ sets one for
every secret below DIR, named by its path below DIR in upper case with
"/", "-" and "." as "_" (a collision is an error). The command inherits
this environment (--clean-env: PATH only); a secret whose name is already
set is an error unless --override. Nothing is written to disk, and no
value appears in an argument or the log.
`

type execCmd struct {
	*common
	cacheFlags
	env         []string
	envFrom     []string
	cleanEnv    bool
	override    bool
	restart     bool
	stopSignal  string
	stopTimeout time.Duration
}

func newExecCmd() *execCmd {
	e := &execCmd{common: newCommon("exec")}
	f := e.flagSet
	f.SetInterspersed(false) // the command's own flags are its own
	e.cacheFlags.define(f)
	f.StringArrayVar(&e.env, "env", nil, "NAME=REF: set NAME to the secret REF (repeatable)")
	f.StringArrayVar(&e.envFrom, "env-from", nil, "PROVIDER:DIR/: set a variable for every secret below DIR (repeatable)")
	f.BoolVar(&e.cleanEnv, "clean-env", false, "start the command from an empty environment (PATH only) plus the secrets")
	f.BoolVar(&e.override, "override", false, "let a secret replace a variable already set")
	f.BoolVar(&e.restart, "restart-on-change", false, "keep the secrets fresh and restart the command when one changes")
	f.StringVar(&e.stopSignal, "stop-signal", "TERM", "the signal that asks the command to stop, for a restart")
	f.DurationVar(&e.stopTimeout, "stop-timeout", 10*time.Second, "how long a stopping command has before SIGKILL")
	// A mount's config file serves: its mount-only settings are passed over.
	newMountFlags().flagSet.VisitAll(func(m *pflag.Flag) {
		if f.Lookup(m.Name) == nil {
			e.alsoKnown = append(e.alsoKnown, m.Name)
		}
	})
	return e
}

// childExit is the command's exit status, for main to exit with.
type childExit struct{ code int }

func (e *childExit) Error() string { return fmt.Sprintf("the command exited with status %d", e.code) }

func runExec(args []string, stdout, stderr io.Writer) error {
	e := newExecCmd()
	if err := e.parse(args, stdout, execUsage); err != nil {
		return helpOK(err)
	}
	if e.flagSet.NArg() == 0 {
		return usagef("exec takes a command: secretfs exec [flags] -- COMMAND [ARG...]")
	}
	if err := e.cacheFlags.check(); err != nil {
		return err
	}
	sig := signalNamed(e.stopSignal)
	if sig == 0 {
		return usagef("--stop-signal %q: want a name such as TERM or INT", e.stopSignal)
	}
	if e.stopTimeout <= 0 {
		return usagef("--stop-timeout must be positive")
	}
	vars, dirs, err := e.sources()
	if err != nil {
		return err
	}
	log, err := e.logger(stderr)
	if err != nil {
		return err
	}
	deadlines, err := e.deadlines()
	if err != nil {
		return err
	}
	// Until the command starts, SIGINT and SIGTERM end secretfs, with
	// the status a shell gives a command they end (128+N); then they are
	// the command's.
	ctx, stop, interrupted := untilSignal(syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, ps, err := e.openResolver(ctx, log, deadlines)
	if ended := interrupted(); ended != nil {
		return ended
	}
	if err != nil {
		return err
	}
	defer closeAll(ps)
	c := cache.New(r, e.cacheFlags.options(deadlines, log))
	defer c.Close()
	env, err := child.Resolve(ctx, c, vars, dirs)
	if ended := interrupted(); ended != nil {
		return ended
	}
	if errors.Is(err, child.ErrName) {
		return usagef("%v", err)
	}
	if err != nil {
		return err
	}
	base := os.Environ()
	if e.cleanEnv {
		base = []string{"PATH=" + os.Getenv("PATH")}
	}
	if _, err := child.Environ(base, env, e.override); errors.Is(err, child.ErrName) {
		return usagef("%v", err)
	} else if err != nil {
		return err
	}
	stop()
	if ended := interrupted(); ended != nil {
		return ended
	}
	code, err := child.Run(c, env, vars, dirs, child.Options{
		Argv: e.flagSet.Args(), Base: base, Override: e.override,
		Stdin: os.Stdin, Stdout: stdout, Stderr: stderr,
		Restart: e.restart, StopSignal: sig, StopTimeout: e.stopTimeout,
		Relist: e.ttl, Logger: log,
	})
	if err != nil {
		// As a shell says it: 127 for a command not found, 126 for one
		// that cannot run.
		fmt.Fprintf(stderr, "secretfs: %s: %v\n", e.flagSet.Arg(0), err)
		if errors.Is(err, osexec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return &childExit{127}
		}
		return &childExit{126}
	}
	if code != 0 {
		return &childExit{code}
	}
	return nil
}

// untilSignal is a context that ends at the first of sigs; interrupted is
// then the exit a shell gives a command that signal ends (128+N), nil
// before. stop lets the signals go; a signal that came before it is never
// lost: interrupted says it once stop returns.
func untilSignal(sigs ...os.Signal) (ctx context.Context, stop func(), interrupted func() error) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	ctx, cancel := context.WithCancel(context.Background())
	var got atomic.Int32
	note := func(s os.Signal) {
		if n, ok := s.(syscall.Signal); ok {
			got.CompareAndSwap(0, int32(n))
		}
		cancel()
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case s := <-ch:
			note(s)
		case <-done:
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			signal.Stop(ch)
			close(done)
			<-finished
			select {
			case s := <-ch: // came while the goroutine took done
				note(s)
			default:
			}
			cancel()
		})
	}
	return ctx, stop, func() error {
		if n := got.Load(); n != 0 {
			return &childExit{128 + int(n)}
		}
		return nil
	}
}

// sources reads --env and --env-from, and enables their providers.
func (e *execCmd) sources() ([]child.Var, []child.Dir, error) {
	var (
		vars []child.Var
		dirs []child.Dir
	)
	for _, f := range e.env {
		name, ref, ok := strings.Cut(f, "=")
		if !ok || !child.ValidName(name) {
			return nil, nil, usagef("--env %q: want NAME=REF, NAME a variable's name", f)
		}
		r, err := resolver.Parse(ref)
		if err != nil {
			return nil, nil, err
		}
		if err := e.notCompiled(r.Provider); err != nil {
			return nil, nil, err
		}
		e.enable(r.Provider)
		vars = append(vars, child.Var{Name: name, Ref: r})
	}
	for _, f := range e.envFrom {
		provider, dir, ok := strings.Cut(f, ":")
		if !ok || provider == "" {
			return nil, nil, usagef("--env-from %q: want PROVIDER:DIR/", f)
		}
		if err := resolver.CheckProvider(provider); err != nil {
			return nil, nil, usagef("--env-from %q: %v", f, err)
		}
		dir = strings.Trim(dir, "/")
		if dir != "" {
			if err := resolver.CheckKey(dir); err != nil {
				return nil, nil, err
			}
		}
		if err := e.notCompiled(provider); err != nil {
			return nil, nil, err
		}
		e.enable(provider)
		dirs = append(dirs, child.Dir{Provider: provider, Dir: dir})
	}
	if len(vars) == 0 && len(dirs) == 0 {
		return nil, nil, usagef("exec needs --env NAME=REF or --env-from PROVIDER:DIR/")
	}
	return vars, dirs, nil
}
