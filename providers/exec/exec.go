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
// that is killed when the call ends, under a reaper (Config.Reaper, see
// Reap) that ends every descendant, setsid or not, when the program exits,
// and with stdout bounded (1 MiB by default). The first line of its stderr, cut short, goes to the log;
// stdout never does. At most Concurrency calls run at once.
//
// It refuses, as sshd's StrictModes does, a program that is writable by
// group or others or owned by a user other than root or the daemon's, or
// that lies below a directory that is (other than a sticky directory such
// as /tmp whose next component is root's or the daemon's), and the same of
// the interpreter its #! line names. It checks at start and again before
// every call, and refuses (never runs) a program that changed since.
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
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/secretfs/secretfs/resolver"
)

// DefaultMaxOutput bounds a program's stdout.
const DefaultMaxOutput = 1 << 20

// reaperGrace is how long a reaper has, after the deadline, to end the
// program's descendants before it is killed with its group.
const reaperGrace = time.Second

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
	// Reaper, when set, is the command the program runs under (secretfs
	// exec-reaper, see Reap): every descendant is killed when it exits,
	// setsid or not. Without it, a process group holds them, which a
	// descendant that calls setsid leaves.
	Reaper []string
	Logger *slog.Logger
}

// Provider runs a program for each call. It is safe for concurrent use.
type Provider struct {
	cfg  Config
	prog *Program
	sem  chan struct{}
	log  *slog.Logger
}

// New checks the program and returns its provider.
func New(cfg Config) (*Provider, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, fmt.Errorf("exec provider %s: no command", cfg.Name)
	}
	prog, err := NewProgram(cfg.Command[0])
	if err != nil {
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
	return &Provider{cfg: cfg, prog: prog, sem: make(chan struct{}, cfg.Concurrency), log: log}, nil
}

// Program is a program as exec providers run one: found on PATH, checked
// (TrustedPath, and so is every interpreter its "#!" lines name) when it
// is made, and checked again before every run (Check). On-change commands
// are run so too.
type Program struct {
	path    string
	interps []string // the interpreters of its #! lines (see interpreters)
	id      identity // the program as checked at start
}

// NewProgram finds name (on PATH unless it has a "/") and checks it.
func NewProgram(name string) (*Program, error) {
	path, err := osexec.LookPath(name)
	if err != nil {
		return nil, err
	}
	if err := TrustedPath(path); err != nil {
		return nil, err
	}
	interps, err := interpreters(path, os.Getenv("PATH"))
	if err != nil {
		return nil, fmt.Errorf("interpreter: %w", err)
	}
	id, err := identify(path)
	if err != nil {
		return nil, err
	}
	return &Program{path: path, interps: interps, id: id}, nil
}

// Path is where the program was found.
func (p *Program) Path() string { return p.path }

// Check checks the program again before a run: the same file as when it
// was made (no one replaced or changed it), still trusted along its path,
// and so are its interpreters. A refusal is counted (Refused).
func (p *Program) Check() error {
	id, err := identify(p.path)
	if err == nil && id != p.id {
		err = fmt.Errorf("%s changed since it was checked", p.path)
	}
	if err == nil {
		err = TrustedPath(p.path)
	}
	for _, interp := range p.interps {
		if err == nil {
			err = TrustedPath(interp)
		}
	}
	if err != nil {
		refused.Add(1)
	}
	return err
}

// Trusted refuses, when secretfs runs as root, a file others could change
// (a template): writable by group or others, or owned by a user other than
// root or the daemon's. As sshd and sudo do.
func Trusted(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err
	}
	return trustedFile(path, &st)
}

// trustedFile refuses a file writable by group or others, or owned by
// another user than root or the daemon's.
func trustedFile(path string, st *unix.Stat_t) error {
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o): refusing it", path, st.Mode&0o7777)
	}
	if !trustedOwner(st.Uid) {
		return fmt.Errorf("%s is owned by uid %d, not root or this daemon's user: refusing it", path, st.Uid)
	}
	return nil
}

func trustedOwner(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// TrustedPath checks a program as sshd's StrictModes checks a user's
// files: the file and every directory the kernel goes through to reach it,
// those a symlink on the way leads through included, are owned by root or
// the daemon's user and not writable by group or others, except a sticky
// directory (such as /tmp) whose next component is owned by root or the
// daemon's user; so is every symlink on the way. Anyone who could write one
// of them could put another program in its place, or swap a link while it
// is run.
func TrustedPath(path string) error {
	real, err := trustedWalk(path)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return err
	}
	return trustedFile(path, &st)
}

// maxLinks is how many symlinks a walk follows, as the kernel's limit.
const maxLinks = 40

// trustedWalk resolves path one component at a time, as the kernel does,
// checking every directory it goes through and every symlink it follows,
// and returns the path it leads to.
func trustedWalk(path string) (string, error) {
	if !filepath.IsAbs(path) {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		path = filepath.Join(wd, path)
	}
	todo := strings.Split(path, "/")
	cur, links := "/", 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur) // cur holds no symlink: .. is its parent
			continue
		}
		next := filepath.Join(cur, name)
		var dir, child unix.Stat_t
		if err := unix.Stat(cur, &dir); err != nil {
			return "", err
		}
		if err := unix.Lstat(next, &child); err != nil {
			return "", err
		}
		if !trustedOwner(dir.Uid) {
			return "", fmt.Errorf("%s: directory %s is owned by uid %d, not root or this daemon's user: refusing it", path, cur, dir.Uid)
		}
		if dir.Mode&0o022 != 0 && (dir.Mode&unix.S_ISVTX == 0 || !trustedOwner(child.Uid)) {
			return "", fmt.Errorf("%s: directory %s is writable by group or others (mode %04o): anyone could replace what is below it: refusing it", path, cur, dir.Mode&0o7777)
		}
		if child.Mode&unix.S_IFMT != unix.S_IFLNK {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: too many symlinks", path)
		}
		if !trustedOwner(child.Uid) {
			return "", fmt.Errorf("%s: symlink %s is owned by uid %d, not root or this daemon's user: refusing it", path, next, child.Uid)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return cur, nil
}

// identity is what says a program is the one checked: a file replaced,
// written, moved, chmod'ed or chown'ed has another.
type identity struct {
	dev, ino, size uint64
	ctime          unix.Timespec
}

func identify(path string) (identity, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return identity{}, err
	}
	return identity{dev: st.Dev, ino: st.Ino, size: uint64(st.Size), ctime: st.Ctim}, nil
}

// maxInterpreters is how deep "#!" lines may nest, as the kernel's limit.
const maxInterpreters = 4

// interpreters checks the programs that run path: the interpreter its
// "#!" line names, and that one's, nested as the kernel allows; for
// /usr/bin/env, the program it finds in pathEnv. It returns them, to be
// checked again before every call.
func interpreters(path, pathEnv string) ([]string, error) {
	var out []string
	for range maxInterpreters {
		interp, arg, err := shebang(path)
		if err != nil || interp == "" {
			return out, err
		}
		if err := TrustedPath(interp); err != nil {
			return nil, err
		}
		out = append(out, interp)
		if filepath.Base(interp) != "env" {
			path = interp
			continue
		}
		// env runs its argument, found on PATH: the kernel passes the
		// rest of the line as one argument.
		if arg == "" || strings.HasPrefix(arg, "-") || strings.ContainsAny(arg, " \t=") {
			return nil, fmt.Errorf("%s: #!%s %s: only `env PROGRAM` is understood", path, interp, arg)
		}
		found, err := lookPath(arg, pathEnv)
		if err != nil {
			return nil, fmt.Errorf("%s: #!%s %s: %w", path, interp, arg, err)
		}
		if err := TrustedPath(found); err != nil {
			return nil, err
		}
		out = append(out, found)
		path = found
	}
	return nil, fmt.Errorf("%s: #! lines nested more than %d deep", path, maxInterpreters)
}

// shebang reads a "#!" line as the kernel does: the interpreter, and the
// rest of the line as one argument, split on spaces and tabs only.
func shebang(path string) (interp, arg string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	buf := make([]byte, 256)
	n, _ := io.ReadFull(f, buf)
	line := buf[:n]
	if !bytes.HasPrefix(line, []byte("#!")) {
		return "", "", nil
	}
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	rest := strings.Trim(string(line[2:]), " \t")
	if rest == "" {
		return "", "", fmt.Errorf("%s: an empty #! line", path)
	}
	interp, arg, _ = strings.Cut(strings.ReplaceAll(rest, "\t", " "), " ")
	return interp, strings.Trim(arg, " \t"), nil
}

// lookPath finds name on pathEnv as env does.
func lookPath(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH", name)
}

// refused counts the calls refused because a program changed or could have.
var refused atomic.Uint64

// Refused is how many calls were refused, never run, because their program
// (or its interpreter) changed since it was checked or is no longer
// trusted.
func Refused() uint64 { return refused.Load() }

// check checks the program again before a call (Program.Check).
func (p *Provider) check() error {
	if err := p.prog.Check(); err != nil {
		p.log.Error("exec provider program refused, not run", "provider", p.cfg.Name, "error", err)
		return fmt.Errorf("%w: program refused: %v", resolver.ErrUnavailable, err)
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
	if err := p.check(); err != nil {
		return nil, err
	}
	argv := append([]string{p.prog.path}, p.cfg.Command[1:]...)
	out, err := Run(ctx, Cmd{Argv: append(argv, args...), Env: p.env(), Credential: p.cfg.Credential, Reaper: p.cfg.Reaper, MaxOutput: p.cfg.MaxOutput})
	if out.Stderr != "" {
		p.log.Warn("exec provider said", "provider", p.cfg.Name, "op", args[0], "stderr", out.Stderr)
	}
	var ee *osexec.ExitError
	switch {
	case errors.Is(err, errHeldOutput):
		return nil, fmt.Errorf("%w: %v", resolver.ErrUnavailable, err)
	case out.Over:
		return nil, fmt.Errorf("%w: output larger than %d bytes", resolver.ErrUnavailable, p.cfg.MaxOutput)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%w: %w", resolver.ErrUnavailable, ctx.Err())
	case err == nil:
		return out.Stdout, nil
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return nil, exitError(ee.ExitCode(), args)
	default:
		return nil, fmt.Errorf("%w: %v", resolver.ErrUnavailable, err)
	}
}

// Cmd is one run of a program under the process rules of exec providers.
type Cmd struct {
	Argv       []string // the program's path, then its arguments
	Env        []string // its whole environment
	Credential *syscall.Credential
	// Reaper, when set, is the command the program runs under (see
	// Config.Reaper).
	Reaper    []string
	MaxOutput int // bound of what is kept of stdout; default DefaultMaxOutput
}

// Output is what a run left: its stdout (at most MaxOutput bytes; Over
// says there was more) and the first line of its stderr, cut short.
type Output struct {
	Stdout []byte
	Over   bool
	Stderr string
}

// errHeldOutput: a process the program started left its group and still
// holds its output.
var errHeldOutput = errors.New("a process it started still holds its output")

// Run runs c with stdin from /dev/null, in a process group of its own that
// is killed when it exits or ctx ends (a reaper, when set, is asked first
// and ends every descendant). The error is the run's: nil, an
// *exec.ExitError, or one that says it could not run or was cut short.
func Run(ctx context.Context, c Cmd) (Output, error) {
	if c.MaxOutput <= 0 {
		c.MaxOutput = DefaultMaxOutput
	}
	argv := c.Argv
	if len(c.Reaper) > 0 {
		argv = append(append([]string{}, c.Reaper...), argv...)
	}
	cmd := osexec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = nil // /dev/null
	cmd.Env = c.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.Credential}
	// On the deadline the whole process group goes, grandchildren too; a
	// reaper is asked first, so that it ends the descendants that left the
	// group, and is killed with the group if it does not exit in time.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if len(c.Reaper) > 0 {
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = reaperGrace
	}
	// The pipes are files of our own, so that Wait returns when the
	// program exits, even if a grandchild still holds them: the group is
	// killed then, and the readers see the end.
	outR, outW, err := os.Pipe()
	if err != nil {
		return Output{}, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return Output{}, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	stdout := &capped{max: c.MaxOutput}
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
		return Output{}, err
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
			return Output{}, errHeldOutput
		}
	}
	return Output{Stdout: stdout.buf.Bytes(), Over: stdout.over, Stderr: stderr.String()}, err
}

func (p *Provider) env() []string {
	out := MinimalEnv()
	for _, name := range p.cfg.Env {
		if v, ok := os.LookupEnv(name); ok {
			out = append(out, name+"="+v)
		}
	}
	return out
}

// MinimalEnv is the environment a program starts from: this process's
// PATH and HOME, and the assignments given.
func MinimalEnv(set ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, set...)
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
