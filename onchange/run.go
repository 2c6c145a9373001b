package onchange

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/secretfs/secretfs/providers/exec"
	"github.com/secretfs/secretfs/resolver"
)

// readBudget bounds how long reading one item again may take.
const readBudget = 30 * time.Second

// items are the names of what s watches now: its references and
// templates as written, and the keys its globs matched.
func (r *Runner) items(s *state) []string {
	var out []string
	for _, t := range s.Targets {
		if t.Glob == "" {
			out = append(out, t.String())
		}
	}
	s.mu.Lock()
	for k := range s.globKeys {
		out = append(out, k)
	}
	s.mu.Unlock()
	return out
}

// read reads an item as it is now, as a hash: a value, a template's
// render, or "gone" for a secret that is not found. ok is false when it
// cannot tell (the backend is down, the item names nothing it knows).
func (r *Runner) read(s *state, item string) (h [32]byte, ok bool) {
	ctx, cancel := context.WithTimeout(r.ctx, readBudget)
	defer cancel()
	if name, isTmpl := strings.CutPrefix(item, TemplatesDir+"/"); isTmpl && s.tmpls[name] != nil {
		out, _, err := s.tmpls[name].Render(ctx, func(ctx context.Context, ref resolver.Reference) ([]byte, error) {
			v, err := r.opts.Engine.Get(ctx, ref)
			return v.Value, err
		})
		if err != nil {
			r.log.Warn("on-change: template not rendered; its change is not decided", "entry", s.Name, "template", name, "kind", resolver.KindOf(err).String())
			return h, false
		}
		h = sha256.Sum256(out)
		clear(out)
		return h, true
	}
	ref, err := resolver.Parse(item)
	if err != nil {
		return h, false
	}
	v, err := r.opts.Engine.Get(ctx, ref)
	switch resolver.KindOf(err) {
	case resolver.KindOK:
		return sha256.Sum256(v.Value), true
	case resolver.KindNotFound:
		return sha256.Sum256([]byte("\x00gone")), true
	}
	r.log.Warn("on-change: secret not read; its change is not decided", "entry", s.Name, "secret", item, "error", err)
	return h, false
}

// relist holds what s watches: its references, its templates' inputs, and
// the keys its globs match now (listed again). A key that appears under a
// glob after the first listing that succeeded is a change.
func (r *Runner) relist(s *state) {
	hold := map[string]resolver.Reference{}
	keys := map[string]bool{}
	globsListed := true
	for _, t := range s.Targets {
		switch {
		case t.Template != "":
			for _, in := range s.tmpls[t.Template].Refs() {
				in.Field = ""
				hold[in.String()] = in
			}
		case t.Glob != "":
			found, err := r.expand(t.Ref.Provider, t.Glob)
			if r.noteGlob(s, t.String(), err); err != nil {
				globsListed = false
				continue
			}
			for _, k := range found {
				ref := resolver.Reference{Provider: t.Ref.Provider, Key: k}
				hold[ref.String()] = ref
				keys[ref.String()] = true
			}
		default:
			v := t.Ref
			v.Field = ""
			hold[v.String()] = v
		}
	}
	var added []string
	s.mu.Lock()
	for name, ref := range hold {
		if _, ok := s.releases[name]; !ok {
			s.releases[name] = r.opts.Engine.Hold(ref)
		}
	}
	if globsListed {
		for name, release := range s.releases {
			if _, ok := hold[name]; !ok {
				release()
				delete(s.releases, name)
			}
		}
		for k := range keys {
			if !s.globKeys[k] && s.listed {
				added = append(added, k)
			}
		}
		s.globKeys, s.listed = keys, true
	}
	s.mu.Unlock()
	if len(added) > 0 {
		r.note(s, added)
	}
}

// noteGlob logs a glob's listing failing, once for a failure (not at every
// relist while it lasts), and its listing again.
func (r *Runner) noteGlob(s *state, glob string, err error) {
	s.mu.Lock()
	before, failed := s.globErr[glob]
	switch {
	case err != nil:
		if s.globErr == nil {
			s.globErr = map[string]string{}
		}
		s.globErr[glob] = err.Error()
	case failed:
		delete(s.globErr, glob)
	}
	s.mu.Unlock()
	switch {
	case err != nil && err.Error() != before:
		r.log.Warn("on-change: a glob could not be listed; its keys are watched as last listed", "entry", s.Name, "glob", glob, "error", err)
	case err == nil && failed:
		r.log.Info("on-change: a glob is listed again", "entry", s.Name, "glob", glob)
	}
}

// expand lists the keys of provider that match glob, one level of the
// pattern at a time, at most maxGlobKeys.
func (r *Runner) expand(provider, glob string) ([]string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, readBudget)
	defer cancel()
	segs := strings.Split(glob, "/")
	dirs := []string{""}
	var keys []string
	for i, seg := range segs {
		last := i == len(segs)-1
		var next []string
		for _, dir := range dirs {
			join := func(name string) string {
				if dir == "" {
					return name
				}
				return dir + "/" + name
			}
			if !strings.ContainsAny(seg, "*?[") {
				next = append(next, join(seg))
				continue
			}
			l, _, err := r.opts.Engine.List(ctx, provider, dir)
			if err != nil {
				return nil, err
			}
			for _, name := range l.Names() {
				sub, isDir := strings.CutSuffix(name, "/")
				if isDir == last {
					continue
				}
				if ok, _ := path.Match(seg, sub); ok {
					next = append(next, join(sub))
				}
			}
			if len(next) > maxGlobKeys {
				return nil, fmt.Errorf("matches more than %d names", maxGlobKeys)
			}
		}
		if last {
			keys = next
		}
		dirs = next
	}
	return keys, nil
}

// act runs s's command, or sends its signal, for the items that changed
// (why: "change" or "start"), and counts the result.
func (r *Runner) act(s *state, changed []string, why string) {
	names := strings.Join(changed, " ")
	if s.prog == nil {
		err := signalPidFile(s.PidFile, s.Signal)
		result := "ok"
		if err != nil {
			result = "failed"
			r.log.Error("on-change: signal not sent", "entry", s.Name, "signal", s.Signal.String(), "pid-file", s.PidFile, "error", err)
		} else {
			r.log.Info("on-change: signal sent", "entry", s.Name, "signal", s.Signal.String(), "pid-file", s.PidFile, "changed", names, "why", why)
		}
		r.opts.Ran(result)
		return
	}
	if err := s.prog.Check(); err != nil {
		r.log.Error("on-change: program refused, not run", "entry", s.Name, "error", err)
		r.opts.Ran("refused")
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, s.Timeout)
	defer cancel()
	env := exec.MinimalEnv("SECRETFS_CHANGED="+names, "SECRETFS_REASON="+why)
	argv := append([]string{s.prog.Path()}, s.Command[1:]...)
	began := time.Now()
	out, err := exec.Run(ctx, exec.Cmd{Argv: argv, Env: env, Credential: s.Credential, Reaper: r.opts.Reaper, MaxOutput: 64 << 10})
	took := time.Since(began).Round(time.Millisecond)
	clear(out.Stdout)
	result := "ok"
	switch {
	case ctx.Err() != nil:
		result = "timeout"
		r.log.Error("on-change: command ran out of time; its process group was killed", "entry", s.Name, "timeout", s.Timeout, "changed", names)
	case err != nil:
		result = "failed"
		r.log.Error("on-change: command failed", "entry", s.Name, "error", err, "stderr", out.Stderr, "changed", names, "took", took)
	default:
		r.log.Info("on-change: command ran", "entry", s.Name, "changed", names, "why", why, "took", took)
		if out.Stderr != "" {
			r.log.Warn("on-change: command said", "entry", s.Name, "stderr", out.Stderr)
		}
	}
	r.opts.Ran(result)
}

// signalPidFile sends sig to the process whose pid file holds, as root
// only from a file only root (or this daemon's user) could write: its path
// is checked, then the file is opened without following a last symlink and
// checked again as opened. The pid is one process's: above 1 and within
// the kernel's 32 bits (a larger number would wrap to a group, or to
// every process).
func signalPidFile(file string, sig syscall.Signal) error {
	if err := exec.TrustedPath(file); err != nil {
		return err
	}
	fd, err := unix.Open(file, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: file, Err: err}
	}
	f := os.NewFile(uintptr(fd), file)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o022 != 0 || st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return errors.New("the pid file is not a regular file that only root or this daemon's user may write")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPidFile))
	if err != nil {
		return err
	}
	pid, err := strconv.ParseInt(string(bytes.TrimSpace(data)), 10, 32)
	if err != nil || pid <= 1 {
		return errors.New("the pid file holds no pid of a process")
	}
	return syscall.Kill(int(pid), sig)
}
