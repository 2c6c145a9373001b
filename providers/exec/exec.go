// Package exec makes any program a provider, the way git credential
// helpers and Docker credential helpers work: `pass show`, `op read`,
// `sops -d`, an in-house CLI, or a three-line wrapper around one.
//
// The contract (the README has it too):
//
//	PROGRAM get KEY [VERSION]   prints the value on stdout, byte for byte; exit 0
//	PROGRAM list [DIR]          prints one name a line, directories ending in "/"
//
// Exit 3: not found. Exit 5: permission denied. Exit 2: not supported (a
// version, or listing). Any other exit, a signal, or the deadline passing:
// the backend is unavailable, and the cache's stale rules apply. Exit codes
// 3 and 5 mean what they mean for `secretfs get`, so `secretfs get` itself
// can be wrapped.
//
// The child runs with stdin from /dev/null, an environment of PATH, HOME
// and the names the configuration passes, in a process group of its own
// that is killed when the call ends (so no grandchild outlives it, unless
// it leaves the group with setsid), and with stdout bounded (1 MiB by
// default). The first line of its stderr, cut short, goes to the log;
// stdout never does. At most Concurrency calls run at once.
//
// When secretfs runs as root it refuses, as sshd and sudo do, a program
// that is writable by group or others, or owned by a user other than root
// or the daemon's.
package exec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	osexec "os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// DefaultMaxOutput bounds a program's stdout.
const DefaultMaxOutput = 1 << 20

// DefaultConcurrency bounds the calls of one provider at once.
const DefaultConcurrency = 4

// Config configures a provider.
type Config struct {
	Name        string
	Command     []string // the program and its fixed arguments
	Env         []string // names of variables passed through
	Timeout     time.Duration
	MaxOutput   int
	Concurrency int
	// Credential, when set, runs the program as another uid and gid.
	Credential *syscall.Credential
	Logger     *slog.Logger
}

// Provider runs a program for each call. It is safe for concurrent use.
type Provider struct {
	cfg  Config
	path string
	sem  chan struct{}
	log  *slog.Logger
}

// New checks the program and returns its provider.
func New(cfg Config) (*Provider, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, fmt.Errorf("exec provider %s: no command", cfg.Name)
	}
	path, err := osexec.LookPath(cfg.Command[0])
	if err != nil {
		return nil, fmt.Errorf("exec provider %s: %w", cfg.Name, err)
	}
	if err := Trusted(path); err != nil {
		return nil, fmt.Errorf("exec provider %s: %w", cfg.Name, err)
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = DefaultMaxOutput
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = resolver.DefaultTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{cfg: cfg, path: path, sem: make(chan struct{}, cfg.Concurrency), log: log}, nil
}

// Trusted refuses, when secretfs runs as root, a file others could change
// (a program, a template): writable by group or others, or owned by a user
// other than root or the daemon's. As sshd and sudo do.
func Trusted(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o): refusing it as root", path, st.Mode().Perm())
	}
	if sys.Uid != 0 && int(sys.Uid) != os.Getuid() {
		return fmt.Errorf("%s is owned by uid %d, not root or this daemon's user: refusing it", path, sys.Uid)
	}
	return nil
}

// Name implements resolver.Provider.
func (p *Provider) Name() string { return p.cfg.Name }

// Get implements resolver.Provider: PROGRAM get KEY [VERSION].
func (p *Provider) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	if option(key) || option(version) {
		return resolver.Secret{}, fmt.Errorf("%s get: %w: a key or version that starts with '-' would be read as an option", p.cfg.Name, resolver.ErrNotFound)
	}
	args := []string{"get", key}
	if version != "" {
		args = append(args, version)
	}
	out, err := p.run(ctx, args)
	if err != nil {
		return resolver.Secret{}, fmt.Errorf("%s get %s: %w", p.cfg.Name, key, err)
	}
	return resolver.Secret{Value: out}, nil
}

// List implements resolver.Lister: PROGRAM list [DIR].
func (p *Provider) List(ctx context.Context, dir string) ([]string, error) {
	if option(dir) {
		return nil, fmt.Errorf("%s list: %w: a directory that starts with '-' would be read as an option", p.cfg.Name, resolver.ErrNotFound)
	}
	args := []string{"list"}
	if dir != "" {
		args = append(args, dir)
	}
	out, err := p.run(ctx, args)
	if err != nil {
		return nil, fmt.Errorf("%s list %s: %w", p.cfg.Name, dir, err)
	}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			names = append(names, line)
		}
	}
	return names, nil
}

// option reports whether an argument would be read as an option by the
// program (getopt reads one anywhere on the line): such keys, versions and
// directories are never passed.
func option(arg string) bool { return strings.HasPrefix(arg, "-") }

// exitError maps the contract's exit codes. Exit 2 on a get is "not
// supported": for a version that is "no such version"; without one it is a
// program that cannot do its job (a shell's usage error exits 2 too), which
// says nothing about the secret: unavailable.
func exitError(code int, args []string) error {
	switch code {
	case 3:
		return resolver.ErrNotFound
	case 5:
		return resolver.ErrPermission
	case 2:
		switch {
		case args[0] == "get" && len(args) > 2:
			return fmt.Errorf("%w (%w: versions)", resolver.ErrNotFound, errors.ErrUnsupported)
		case args[0] == "list":
			return errors.ErrUnsupported
		}
	}
	return fmt.Errorf("%w: exit %d", resolver.ErrUnavailable, code)
}

// run runs the program with args under ctx and the provider's timeout.
func (p *Provider) run(ctx context.Context, args []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	select {
	case p.sem <- struct{}{}:
		defer func() { <-p.sem }()
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for a free slot: %w", resolver.ErrUnavailable, ctx.Err())
	}
	cmd := osexec.CommandContext(ctx, p.path, append(p.cfg.Command[1:len(p.cfg.Command):len(p.cfg.Command)], args...)...)
	cmd.Stdin = nil // /dev/null
	cmd.Env = p.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.cfg.Credential}
	// On the deadline the whole process group goes, grandchildren too.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// The pipes are files of our own, so that Wait returns when the
	// program exits, even if a grandchild still holds them: the group is
	// killed then, and the readers see the end.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", resolver.ErrUnavailable, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("%w: %v", resolver.ErrUnavailable, err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	stdout := &capped{max: p.cfg.MaxOutput}
	stderr := &firstLine{max: 200}
	read := func(dst io.Writer, src *os.File, done chan<- struct{}) {
		io.Copy(dst, src)
		src.Close()
		close(done)
	}
	outDone, errDone := make(chan struct{}), make(chan struct{})
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("%w: %v", resolver.ErrUnavailable, err)
	}
	go read(stdout, outR, outDone)
	go read(stderr, errR, errDone)
	err = cmd.Wait()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever it left behind in its group
	for _, done := range []chan struct{}{outDone, errDone} {
		select {
		case <-done:
		case <-time.After(time.Second):
			// A grandchild that left the group (setsid) still holds the
			// output: what it says is not to be trusted or waited for.
			// Closing our ends ends the readers.
			outR.Close()
			errR.Close()
			return nil, fmt.Errorf("%w: a process it started still holds its output", resolver.ErrUnavailable)
		}
	}
	if line := stderr.String(); line != "" {
		p.log.Warn("exec provider said", "provider", p.cfg.Name, "op", args[0], "stderr", line)
	}
	if stdout.over {
		return nil, fmt.Errorf("%w: output larger than %d bytes", resolver.ErrUnavailable, p.cfg.MaxOutput)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", resolver.ErrUnavailable, ctx.Err())
	}
	var ee *osexec.ExitError
	switch {
	case err == nil:
		return stdout.buf.Bytes(), nil
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return nil, exitError(ee.ExitCode(), args)
	default:
		return nil, fmt.Errorf("%w: %v", resolver.ErrUnavailable, err)
	}
}

func (p *Provider) env() []string {
	out := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, name := range p.cfg.Env {
		if v, ok := os.LookupEnv(name); ok {
			out = append(out, name+"="+v)
		}
	}
	return out
}

// capped keeps at most max bytes and notes that there were more.
type capped struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if c.buf.Len()+len(p) > c.max {
		c.over = true
		return len(p), nil // read on to the end, keep nothing more
	}
	return c.buf.Write(p)
}

// firstLine keeps the first line of what is written, cut to max bytes.
type firstLine struct {
	buf  bytes.Buffer
	max  int
	done bool
}

func (f *firstLine) Write(p []byte) (int, error) {
	if !f.done {
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			f.buf.Write(p[:i])
			f.done = true
		} else {
			f.buf.Write(p)
		}
		if f.buf.Len() >= f.max {
			f.buf.Truncate(f.max)
			f.done = true
		}
	}
	return len(p), nil
}

func (f *firstLine) String() string { return strings.TrimSpace(f.buf.String()) }
