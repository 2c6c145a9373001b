// Package onchange runs a command, or signals a process, when the secrets
// or templates it names change: the way Vault Agent runs a template's
// command, for programs that re-read their files on a signal (nginx,
// HAProxy, PostgreSQL) or that a script must reload.
//
// An Entry names what it watches (Targets: a reference, a glob of keys, or
// a template) and what to do. The Runner learns of changes from the
// filesystem once the kernel was told of them (fs.Config.Changed), so an
// action never runs before an open shows the new value. It then:
//
//   - waits for changes to settle (Debounce, from the last change, at most
//     MaxWait from the first), so that one rotation touching several
//     secrets, or a template and its inputs, is one run;
//   - reads what the entry watches again and compares it (a SHA-256 of the
//     value or the render, kept in memory) with what it last read: a
//     change of another field of a secret, or one that leaves a render as
//     it was, runs nothing;
//   - runs the command (never two runs of one entry at once; a change
//     during a run makes one more run after it), or sends the signal.
//
// Everything an entry watches is held in the engine (cache.Cache.Hold):
// it is refreshed ahead whether or not anyone reads it, one backend call
// per TTL each. A glob is listed again every TTL (from the engine's
// cache), and a key that appears under it counts as a change.
//
// A command runs as exec providers' programs do (package
// providers/exec): its program is checked when the entry is made and
// before every run, stdin is /dev/null, its environment is PATH, HOME and
// SECRETFS_CHANGED (the names that changed, never a value), it has a
// process group of its own (and a reaper), a timeout, and its output is
// bounded; the first line of its stderr is logged. A failure is logged
// and counted, and later changes run it again.
package onchange

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/providers/exec"
	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

// Defaults for Entry fields left zero.
const (
	DefaultDebounce = time.Second
	DefaultTimeout  = 30 * time.Second
	// maxWaitFactor bounds how long changes that keep coming hold a run
	// back: MaxWait is this many Debounces.
	maxWaitFactor = 10
	// maxGlobKeys bounds what one glob holds.
	maxGlobKeys = 1000
	// maxPidFile bounds what is read of a pid file.
	maxPidFile = 64
)

// TemplatesDir is how a target names a template: templates/NAME.
const TemplatesDir = "templates"

// Target is one thing an entry watches.
type Target struct {
	// Ref is a secret: its value (cut to its field, if it has one).
	Ref resolver.Reference
	// Glob, when set, is a pattern of keys in Ref.Provider (path.Match,
	// per key: "*" does not cross "/"); Ref.Key is unused.
	Glob string
	// Template is the name of a template.
	Template string
}

// String is the target as it was written, in reference form.
func (t Target) String() string {
	switch {
	case t.Template != "":
		return TemplatesDir + "/" + t.Template
	case t.Glob != "":
		return t.Ref.Provider + ":" + t.Glob
	}
	return t.Ref.String()
}

// ParseTarget reads a target: a reference (aws:prod/db#password), the
// same as a path below the mount (aws/prod/db#password), a glob in either
// form (aws:prod/*), or templates/NAME.
func ParseTarget(s string) (Target, error) {
	if name, ok := strings.CutPrefix(s, TemplatesDir+"/"); ok && !strings.Contains(s, ":") {
		if name == "" || strings.Contains(name, "/") {
			return Target{}, fmt.Errorf("%q: want templates/NAME", s)
		}
		return Target{Template: name}, nil
	}
	ref := s
	if i, j := strings.IndexByte(s, ':'), strings.IndexByte(s, '/'); j >= 0 && (i < 0 || j < i) {
		ref = s[:j] + ":" + s[j+1:] // a path below the mount
	}
	provider, key, _ := strings.Cut(ref, ":")
	if strings.ContainsAny(key, "*?[") {
		if strings.ContainsAny(key, "@#") {
			return Target{}, fmt.Errorf("%q: a glob names current values, with no @VERSION or #FIELD", s)
		}
		if _, err := path.Match(key, ""); err != nil {
			return Target{}, fmt.Errorf("%q: %w", s, err)
		}
		if err := resolver.CheckProvider(provider); err != nil {
			return Target{}, fmt.Errorf("%q: %w", s, err)
		}
		return Target{Ref: resolver.Reference{Provider: provider}, Glob: key}, nil
	}
	r, err := resolver.Parse(ref)
	if err != nil {
		return Target{}, fmt.Errorf("%q: %w", s, err)
	}
	return Target{Ref: r}, nil
}

// Entry is one on-change entry: what it watches and what it does.
type Entry struct {
	// Name names the entry in logs and metrics.
	Name    string
	Targets []Target
	// Command is the program and its arguments. For a one-off
	// (--on-change REF=COMMAND) it is /bin/sh -c COMMAND.
	Command []string
	// Signal, with PidFile, is sent to the process whose pid PidFile
	// holds, instead of running a command.
	Signal  syscall.Signal
	PidFile string
	// Debounce is how long changes must settle before a run (default
	// DefaultDebounce); MaxWait (default ten Debounces) bounds the wait
	// from the first change.
	Debounce, MaxWait time.Duration
	// RunAtStart runs it once when the runner starts.
	RunAtStart bool
	// Timeout bounds a run (default DefaultTimeout); the command's
	// process group is killed then.
	Timeout time.Duration
	// Credential, when set, runs the command as another uid and gid.
	Credential *syscall.Credential
}

// Engine is what the runner needs of the cache.
type Engine interface {
	Get(ctx context.Context, ref resolver.Reference) (cache.Value, error)
	List(ctx context.Context, provider, dir string) (*cache.Listing, time.Duration, error)
	Hold(ref resolver.Reference) (release func())
}

// Options configures a Runner.
type Options struct {
	Engine    Engine
	Templates []*templates.Template
	// Relist is how often globs are listed again (default one minute).
	Relist time.Duration
	// Reaper, when set, is the command a program runs under (see
	// exec.Config.Reaper).
	Reaper []string
	Logger *slog.Logger
	// Ran, when set, is told of every run's result: "ok", "failed",
	// "timeout", "refused" (metrics).
	Ran func(result string)
}

// Runner runs the entries' actions on changes. Close stops it.
type Runner struct {
	opts    Options
	log     *slog.Logger
	entries []*state
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	pending []resolver.Reference // guarded by mu; changes not yet matched
	wake    chan struct{}        // capacity 1
}

// state is an entry and what the runner knows of it.
type state struct {
	Entry
	prog *exec.Program // nil for a signal

	mu       sync.Mutex
	last     map[string][32]byte // guarded by mu; by item: a hash of what it last read
	releases map[string]func()   // guarded by mu; by held value: its release
	globKeys map[string]bool     // guarded by mu; the keys the globs matched at the last listing, as provider:key
	listed   bool                // guarded by mu; the globs were listed once (later keys are new against that)
	globErr  map[string]string   // guarded by mu; by glob: why its latest listing failed (warned once)
	changed  map[string]bool     // guarded by mu; items changed since the last run began
	first    time.Time           // guarded by mu; the first change not yet run
	timer    *time.Timer         // guarded by mu; the debounce
	running  bool                // guarded by mu
	again    bool                // guarded by mu; a change settled during a run
	tmpls    map[string]*templates.Template
}

// New checks the entries (their programs, as exec providers' are; their
// templates exist) and returns a Runner; Start starts it.
func New(entries []Entry, opts Options) (*Runner, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Relist <= 0 {
		opts.Relist = time.Minute
	}
	if opts.Ran == nil {
		opts.Ran = func(string) {}
	}
	tmpls := map[string]*templates.Template{}
	for _, t := range opts.Templates {
		tmpls[t.Name] = t
	}
	r := &Runner{opts: opts, log: opts.Logger, wake: make(chan struct{}, 1)}
	for _, e := range entries {
		if len(e.Targets) == 0 {
			return nil, fmt.Errorf("on-change %s: names nothing to watch", e.Name)
		}
		for _, t := range e.Targets {
			if t.Template != "" && tmpls[t.Template] == nil {
				return nil, fmt.Errorf("on-change %s: no template %q", e.Name, t.Template)
			}
		}
		s := &state{Entry: e, tmpls: tmpls, last: map[string][32]byte{}, releases: map[string]func(){}, globKeys: map[string]bool{}, changed: map[string]bool{}}
		switch {
		case len(e.Command) > 0 && e.Signal != 0:
			return nil, fmt.Errorf("on-change %s: a command or a signal, not both", e.Name)
		case len(e.Command) > 0:
			prog, err := exec.NewProgram(e.Command[0])
			if err != nil {
				return nil, fmt.Errorf("on-change %s: %w", e.Name, err)
			}
			s.prog = prog
		case e.Signal != 0:
			if e.PidFile == "" {
				return nil, fmt.Errorf("on-change %s: signal needs pid-file", e.Name)
			}
			if err := exec.TrustedPath(e.PidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("on-change %s: pid-file: %w", e.Name, err)
			}
		default:
			return nil, fmt.Errorf("on-change %s: needs a command or a signal", e.Name)
		}
		if s.Debounce <= 0 {
			s.Debounce = DefaultDebounce
		}
		if s.MaxWait < s.Debounce {
			s.MaxWait = maxWaitFactor * s.Debounce
		}
		if s.Timeout <= 0 {
			s.Timeout = DefaultTimeout
		}
		r.entries = append(r.entries, s)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Start starts the runner: in the background, it holds what every entry
// watches, reads it (what a change is compared with), runs the entries
// with RunAtStart, and then takes changes (those that came meanwhile
// too).
func (r *Runner) Start() {
	// Each entry reads what it watches on its own, and changes are taken
	// at once: one entry that waits on a backend holds back no other. A
	// change of an item not read yet counts as a change.
	var ready sync.WaitGroup
	for _, s := range r.entries {
		ready.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.relist(s)
			items := r.items(s)
			for _, it := range items {
				if h, ok := r.read(s, it); ok {
					s.mu.Lock()
					if _, seen := s.last[it]; !seen {
						s.last[it] = h
					}
					s.mu.Unlock()
				}
			}
			ready.Done()
			if s.RunAtStart && r.ctx.Err() == nil {
				r.act(s, items, "start")
			}
		}()
	}
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		r.loop()
	}()
	go func() {
		defer r.wg.Done()
		ready.Wait()
		r.log.Info("on-change: watching", "entries", len(r.entries))
	}()
}

// Close stops taking changes, waits for the runs under way (each within
// its timeout) and lets go of what the entries held.
func (r *Runner) Close() {
	r.cancel()
	for _, s := range r.entries {
		s.mu.Lock()
		if s.timer != nil && s.timer.Stop() {
			r.wg.Done() // it will not fire
		}
		s.timer = nil
		s.mu.Unlock()
	}
	r.wg.Wait()
	for _, s := range r.entries {
		s.mu.Lock()
		for _, release := range s.releases {
			release()
		}
		clear(s.releases)
		s.mu.Unlock()
	}
}

// Changed is told of values that changed, once the kernel was told (the
// filesystem's Config.Changed). It never blocks.
func (r *Runner) Changed(refs []resolver.Reference) {
	r.mu.Lock()
	r.pending = append(r.pending, refs...)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Runner) loop() {
	relist := time.NewTicker(r.opts.Relist)
	defer relist.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-relist.C:
			for _, s := range r.entries {
				r.relist(s)
			}
		case <-r.wake:
			r.mu.Lock()
			refs := r.pending
			r.pending = nil
			r.mu.Unlock()
			for _, s := range r.entries {
				var hit []string
				for _, ref := range refs {
					hit = append(hit, s.matches(ref)...)
				}
				if len(hit) > 0 {
					r.note(s, hit)
				}
			}
		}
	}
}

// matches returns the items of s that a change of ref (a value: no field)
// touches.
func (s *state) matches(ref resolver.Reference) []string {
	var out []string
	for _, t := range s.Targets {
		switch {
		case t.Template != "":
			for _, in := range s.tmpls[t.Template].Refs() {
				if in.Provider == ref.Provider && in.Key == ref.Key && in.Version == ref.Version {
					out = append(out, t.String())
					break
				}
			}
		case t.Glob != "":
			if t.Ref.Provider == ref.Provider && ref.Version == "" {
				if ok, _ := path.Match(t.Glob, ref.Key); ok {
					out = append(out, ref.Provider+":"+ref.Key)
				}
			}
		default:
			if t.Ref.Provider == ref.Provider && t.Ref.Key == ref.Key && t.Ref.Version == ref.Version {
				out = append(out, t.String())
			}
		}
	}
	return out
}

// note records that items of s changed and (re)arms its debounce.
func (r *Runner) note(s *state, items []string) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.changed) == 0 {
		s.first = now
	}
	for _, it := range items {
		s.changed[it] = true
	}
	wait := min(s.Debounce, max(s.first.Add(s.MaxWait).Sub(now), 0))
	if s.timer != nil && s.timer.Stop() {
		r.wg.Done() // it will not fire
	}
	s.timer = nil
	if r.ctx.Err() != nil {
		return
	}
	r.wg.Add(1)
	s.timer = time.AfterFunc(wait, func() {
		defer r.wg.Done()
		r.settled(s)
	})
}

// settled runs when the changes of s settled: it reads what changed
// again, and acts if anything did.
func (r *Runner) settled(s *state) {
	s.mu.Lock()
	if s.running {
		s.again = true
		s.mu.Unlock()
		return
	}
	items := make([]string, 0, len(s.changed))
	for it := range s.changed {
		items = append(items, it)
	}
	clear(s.changed)
	s.running = true
	s.mu.Unlock()
	for {
		slices.Sort(items)
		var changed []string
		for _, it := range items {
			h, ok := r.read(s, it)
			if !ok {
				continue // cannot tell: not run for it
			}
			s.mu.Lock()
			old, had := s.last[it]
			s.last[it] = h
			s.mu.Unlock()
			if !had || old != h {
				changed = append(changed, it)
			}
		}
		if len(changed) > 0 {
			r.act(s, changed, "change")
		} else {
			r.log.Debug("on-change: nothing it watches changed as it reads", "entry", s.Name, "items", strings.Join(items, " "))
		}
		s.mu.Lock()
		if !s.again || r.ctx.Err() != nil {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.again = false
		items = items[:0]
		for it := range s.changed {
			items = append(items, it)
		}
		clear(s.changed)
		s.mu.Unlock()
	}
}
