package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/audit"
	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/control"
	"github.com/secretfs/secretfs/fs"
	"github.com/secretfs/secretfs/metrics"
	"github.com/secretfs/secretfs/onchange"
	"github.com/secretfs/secretfs/providers/exec"
	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

const mountUsage = `Usage: secretfs mount [flags] MOUNTPOINT

Mounts secrets read-only at MOUNTPOINT and serves them in the foreground
until SIGINT or SIGTERM, which unmount (lazily if busy) and exit 0:

  MOUNTPOINT/PROVIDER/KEY[@VERSION][#FIELD]

One line is printed to stdout when the mount is ready.
`

type mountFlags struct {
	*common
	uid, gid          uint32
	fileMode, dirMode string
	allowOther        bool
	options           []string
	cacheFlags
	auditLog      string
	shutdownGrace time.Duration
	metricsAddr   string
	logFile       string
	mlock         bool
	templateFlags []string
	templates     []*templates.Template
	onChangeFlags []string
	onChanges     []onchange.Entry
}

// newMountFlags defines the flags of mount.
func newMountFlags() *mountFlags {
	m := &mountFlags{common: newCommon("mount")}
	f := m.flagSet
	f.Uint32Var(&m.uid, "uid", uint32(os.Getuid()), "owner of every file and directory (default: the mounting user)")
	f.Uint32Var(&m.gid, "gid", uint32(os.Getgid()), "group of every file and directory (default: the mounting user's)")
	f.StringVar(&m.fileMode, "file-mode", "0400", "permission bits of files, octal")
	f.StringVar(&m.dirMode, "dir-mode", "0500", "permission bits of directories, octal")
	f.BoolVar(&m.allowOther, "allow-other", false, "let other users (and containers) in; the kernel then checks owner and mode")
	f.StringSliceVarP(&m.options, "options", "o", nil, "FUSE-style options: allow_other, default_permissions, uid=N, gid=N, ro, debug")
	m.cacheFlags.define(f)
	f.StringVar(&m.auditLog, "audit-log", "", "append a JSON record of every open (who, what, outcome; never a value) to this file, or - for stderr")
	f.DurationVar(&m.shutdownGrace, "shutdown-grace", 30*time.Second, "after an unmount, how long files still open are served before the daemon exits")
	f.StringArrayVar(&m.templateFlags, "template", nil, "render a template as MOUNT/templates/NAME, NAME=FILE (repeatable)")
	f.StringArrayVar(&m.onChangeFlags, "on-change", nil, "run COMMAND (by /bin/sh -c) when REF changes, REF=COMMAND; REF a reference, a glob or templates/NAME (repeatable; the config file's on-change: does more)")
	f.BoolVar(&m.mlock, "mlock", false, "keep values in locked memory that never reaches swap; needs CAP_IPC_LOCK or an RLIMIT_MEMLOCK (ulimit -l) as large as the values held")
	f.StringVar(&m.logFile, "log-file", "", "append the log to this file instead of stderr (reopened on SIGHUP, for logrotate)")
	f.StringVar(&m.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at /metrics and health at /healthz on HOST:PORT (e.g. 127.0.0.1:9464)")
	return m
}

// parseMountFlags fills the mount flags from args, the environment and the
// --config file, and checks them.
func parseMountFlags(args []string, stdout io.Writer) (*mountFlags, error) {
	m := newMountFlags()
	if err := m.parse(args, stdout, mountUsage); err != nil {
		return nil, err
	}
	if m.flagSet.NArg() != 1 {
		return nil, usagef("mount takes one argument, the mountpoint")
	}
	if err := m.cacheFlags.check(); err != nil {
		return nil, err
	}
	if m.shutdownGrace < 0 {
		return nil, usagef("--shutdown-grace must not be negative")
	}
	if _, err := m.level(); err != nil {
		return nil, err
	}
	if _, _, err := m.fsConfig(); err != nil {
		return nil, err
	}
	var err error
	if m.templates, err = loadTemplates(m.templateFlags, m.templateSection); err != nil {
		return nil, err
	}
	if err := m.templateProviders(m.templates); err != nil {
		return nil, err
	}
	if m.onChanges, err = onChanges(m.onChangeFlags, m.onChangeSection, m.templates); err != nil {
		return nil, err
	}
	for _, e := range m.onChanges {
		for _, t := range e.Targets {
			if t.Template == "" {
				if err := m.notCompiled(t.Ref.Provider); err != nil {
					return nil, usagef("on-change %s watches %s: %v", e.Name, t, err)
				}
			}
		}
	}
	return m, nil
}

func runMount(args []string, stdout, stderr io.Writer) error {
	m, err := parseMountFlags(args, stdout)
	if err != nil {
		return helpOK(err)
	}
	// The mountpoint is resolved once: a symlink changed later never
	// redirects the unmount, the control socket or the checks.
	dir, err := control.Resolve(m.flagSet.Arg(0))
	if err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	cfg, mo, err := m.fsConfig()
	if err != nil {
		return err
	}
	var logFile *audit.File
	if m.logFile != "" {
		if logFile, err = audit.OpenFile(m.logFile); err != nil {
			return fmt.Errorf("--log-file: %w", err)
		}
		defer logFile.Close()
		stderr = logFile
	}
	// No request waits on the log (a stderr nobody reads, a stuck disk).
	sink := newLogSink(stderr)
	defer sink.Close(2 * time.Second)
	log, err := m.logger(sink)
	if err != nil {
		return err
	}
	cfg.Logger = log
	deadlines, err := m.deadlines()
	if err != nil {
		return err
	}
	cfg.Deadlines = deadlines
	var trail *audit.Log
	if m.auditLog != "" {
		if trail, err = audit.Open(m.auditLog, stderr); err != nil {
			return fmt.Errorf("--audit-log: %w", err)
		}
		defer trail.Close()
		cfg.Audit = trail
	}
	cfg.Rules = m.rules
	cfg.Templates = m.templates
	// Names nobody looked up for half a TTL (at most 30 s) are let go, and
	// the files the kernel still holds then are kept fresh: a watched file
	// is held within a TTL of its last lookup.
	cfg.SweepEvery = min(max(m.ttl/2, 250*time.Millisecond), fs.DefaultSweepEvery)

	arena, err := harden(m.mlock)
	if err != nil {
		return err
	}
	// Signals are taken before anything can log: a broken log pipe
	// (SIGPIPE) or a closed terminal (SIGHUP) must never take the mount
	// down, and every signal that stops the daemon unmounts first.
	signal.Ignore(syscall.SIGPIPE) // a write to a broken pipe fails with EPIPE, and that is all
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	r, ps, err := m.openResolver(ctx, log, deadlines)
	if err != nil {
		return err
	}
	defer closeAll(ps)
	if err := reservedNames(r.Names(), len(m.templates)); err != nil {
		return usagef("%v", err)
	}
	met := metrics.New(version())
	copts := m.cacheFlags.options(deadlines, log)
	copts.Observer = met
	if arena != nil {
		copts.Locker, cfg.Locker = arena, arena
	}
	c := cache.New(r, copts)
	defer c.Close()
	cfg.Count = met.FUSERequest
	var runner *onchange.Runner
	if len(m.onChanges) > 0 {
		opts := onchange.Options{Engine: c, Templates: m.templates, Relist: cfg.SweepEvery, Logger: log, Ran: met.OnChangeRun}
		if self, err := selfExe(); err == nil {
			opts.Reaper = []string{self, exec.ReaperCommand}
		}
		if runner, err = onchange.New(m.onChanges, opts); err != nil {
			return usagef("%v", err)
		}
		cfg.Changed = runner.Changed
	}
	srv, err := fs.Mount(dir, c, cfg, mo)
	if err != nil {
		return err
	}
	if runner != nil {
		runner.Start()
		defer runner.Close()
	}
	if m.metricsAddr != "" {
		met.Watch(c, r.Names())
		met.WatchLeases(c.Leases)
		met.WatchAudit(func() uint64 {
			if trail == nil {
				return 0
			}
			return trail.Failures()
		})
		met.WatchExec(exec.Refused)
		if arena != nil {
			met.WatchLocked(arena.Stats)
		}
		ms, err := metrics.Serve(m.metricsAddr, met.Handler(func(ctx context.Context) error { return fs.StatWithin(ctx, dir) }))
		if err != nil {
			srv.Unmount()
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		defer ms.Close()
		log.Info("serving metrics", "addr", ms.Addr())
	}
	sock, err := serveControl(dir, cfg, c, r.Names(), log)
	if err != nil {
		log.Warn("running without a control socket (secretfs status and refresh will not reach this mount)", "error", err)
	}
	closeSock := func() {
		if sock != nil {
			sock.Close() // a new mount at the same place may take the name
			sock = nil
		}
	}
	defer closeSock()
	log.Info("mounted", "mountpoint", dir, "providers", strings.Join(r.Names(), ","), "ttl", m.ttl)
	fmt.Fprintf(stdout, "secretfs: mounted %s (providers: %s)\n", dir, strings.Join(r.Names(), ","))
	notify(log, "READY=1\nSTATUS=serving "+dir+" (providers: "+strings.Join(r.Names(), ",")+")")
	stopWatchdog := watchdog(log, dir)
	defer stopWatchdog()

	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	reload := func() {
		next, err := parseMountFlags(args, io.Discard)
		if err == nil && next.rules.HasAllow() && !fs.AuditMode(cfg) {
			err = errors.New("allow rules need the audit mode, which the kernel fixes per mount: they need a restart")
		}
		if err != nil {
			log.Error("configuration reload rejected; the running configuration stays", "error", err)
			return
		}
		run := reloadables{cache: c, providers: ps, trail: trail, fs: srv}
		if logFile != nil {
			run.files = append(run.files, logFile)
		}
		m.apply(next, run, log)
		notify(log, "STATUS=serving "+dir+" (configuration reloaded)")
	}
	if !waitForStop(done, sigs, reload, log) {
		log.Info("unmounted from outside", "mountpoint", dir)
		return nil
	}
	log.Info("unmounting", "mountpoint", dir)
	if runner != nil {
		// No command runs for a mount that is going away; one under way
		// ends within its timeout.
		runner.Close()
	}
	notify(log, "STOPPING=1\nSTATUS=unmounting "+dir)
	closeSock()
	if err := srv.Unmount(); err != nil {
		return err
	}
	select {
	case <-done:
	case <-time.After(m.shutdownGrace):
		// Lazily detached: files still open were served until now.
		log.Warn("files still open after the shutdown grace; exiting", "mountpoint", dir, "grace", m.shutdownGrace)
	}
	st := c.Stats()
	log.Info("unmounted", "mountpoint", dir, "hits", st.Hits, "misses", st.Misses, "stale", st.Stale,
		"backend_calls", st.Calls, "refreshes", st.Refreshes, "throttled", st.Throttled)
	return nil
}

// serveControl starts the mount's control socket.
func serveControl(dir string, cfg fs.Config, c *cache.Cache, providers []string, log *slog.Logger) (*control.Server, error) {
	path, err := control.Path(dir)
	if err != nil {
		return nil, err
	}
	mode := "fast"
	if fs.AuditMode(cfg) {
		mode = "audit"
	}
	h := &controlled{version: version(), mountpoint: dir, mode: mode, started: time.Now(), cache: c, providers: providers}
	return control.Listen(path, h, log)
}

// fsConfig checks the filesystem flags and folds -o options into them.
func (m *mountFlags) fsConfig() (fs.Config, fs.MountOptions, error) {
	var mo fs.MountOptions
	cfg := fs.Config{UID: m.uid, GID: m.gid}
	fm, err := parseMode("--file-mode", m.fileMode)
	if err != nil {
		return cfg, mo, err
	}
	dm, err := parseMode("--dir-mode", m.dirMode)
	if err != nil {
		return cfg, mo, err
	}
	cfg.FileMode, cfg.DirMode = fm, dm
	mo.AllowOther = m.allowOther
	if dm&0o111 == 0 {
		return cfg, mo, usagef("--dir-mode %s: no x bit, so nobody could enter a directory (want e.g. 0500)", m.dirMode)
	}
	for _, o := range m.options {
		name, val, hasVal := strings.Cut(strings.TrimSpace(o), "=")
		switch {
		case name == "" && !hasVal: // "a,,b": nothing between the commas
		case name == "allow_other" && !hasVal:
			if !m.flagSet.Changed("allow-other") { // --allow-other wins over -o
				mo.AllowOther = true
			}
		case name == "default_permissions" && !hasVal, name == "ro" && !hasVal:
			// ro: always; default_permissions: comes with allow_other
		case name == "debug" && !hasVal:
			mo.Debug = true
		case name == "uid" || name == "gid":
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil {
				return cfg, mo, usagef("-o %s: want a number", o)
			}
			switch {
			case m.flagSet.Changed(name): // --uid and --gid win over -o
			case name == "uid":
				cfg.UID = uint32(n)
			default:
				cfg.GID = uint32(n)
			}
		case name == "rw":
			return cfg, mo, usagef("-o rw: secretfs is read-only")
		default:
			return cfg, mo, usagef("-o %s: unknown option (have allow_other, default_permissions, uid=N, gid=N, ro, debug)", o)
		}
	}
	return cfg, mo, nil
}

func parseMode(flag, s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 || n == 0 {
		return 0, usagef("%s %q: want octal permission bits such as 0440", flag, s)
	}
	return uint32(n), nil
}

// cacheFlags are the engine's flags, of mount and exec.
type cacheFlags struct {
	ttl, negTTL time.Duration
	maxStale    time.Duration
	leaseIdle   time.Duration
	maxEntries  int
}

func (c *cacheFlags) define(f *pflag.FlagSet) {
	f.DurationVar(&c.ttl, "ttl", cache.DefaultTTL, "how long a value is served from memory before the backend is asked again")
	f.DurationVar(&c.leaseIdle, "lease-idle", cache.DefaultLeaseIdle, "how long after its last read a leased secret (a Vault dynamic secret) is still renewed and replaced ahead of its end")
	f.DurationVar(&c.negTTL, "negative-ttl", cache.DefaultNegativeTTL, "how long a not-found answer is remembered")
	f.DurationVar(&c.maxStale, "max-stale", cache.DefaultMaxStale, "how long past its TTL a value is served while its backend is unavailable (0: never)")
	f.IntVar(&c.maxEntries, "max-entries", cache.DefaultMaxEntries, "most values held in memory (and, apart, most listings and most negative answers)")
}

func (c *cacheFlags) check() error {
	if c.ttl <= 0 || c.negTTL <= 0 || c.maxStale < 0 || c.maxEntries <= 0 {
		return usagef("--ttl, --negative-ttl and --max-entries must be positive, --max-stale not negative")
	}
	return nil
}

// options are the engine's options of these flags.
func (c *cacheFlags) options(d resolver.Deadlines, log *slog.Logger) cache.Options {
	return cache.Options{TTL: c.ttl, NegativeTTL: c.negTTL, MaxStale: c.maxStale, LeaseIdle: c.leaseIdle,
		MaxEntries: c.maxEntries, Deadlines: d, Logger: log}
}
