package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/secretfs/secretfs/config"
	"github.com/secretfs/secretfs/providers/exec"
	"github.com/secretfs/secretfs/resolver"
)

// execDef is one exec provider, from --exec-provider NAME=PATH or the
// config file's exec-providers: list.
type execDef struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	Env     []string `yaml:"env"`
	Timeout string   `yaml:"timeout"`
	User    string   `yaml:"user"` // "UID[:GID]" to run as
}

// execDefs gathers the exec providers of the flags and the config file.
func (c *common) execDefs(section *yaml.Node) ([]execDef, error) {
	var defs []execDef
	for _, f := range c.execFlags {
		name, path, ok := strings.Cut(f, "=")
		if !ok || name == "" || path == "" {
			return nil, usagef("--exec-provider %q: want NAME=PATH", f)
		}
		defs = append(defs, execDef{Name: name, Command: []string{path}})
	}
	if section != nil {
		var fromFile []execDef
		if err := config.Decode(section, &fromFile); err != nil {
			return nil, usagef("--config: exec-providers: %v", err)
		}
		defs = append(defs, fromFile...)
	}
	seen := map[string]bool{}
	for _, d := range defs {
		if err := resolver.CheckProvider(d.Name); err != nil {
			return nil, usagef("exec provider %q: %v", d.Name, err)
		}
		if _, builtin := c.openers[d.Name]; builtin || seen[d.Name] {
			return nil, usagef("exec provider %q: the name is taken", d.Name)
		}
		seen[d.Name] = true
	}
	return defs, nil
}

// execTimeout is an exec provider's budget for a call: its own timeout:,
// else --timeout.
func (c *common) execTimeout(d execDef) (time.Duration, error) {
	if d.Timeout == "" {
		return c.timeout, nil
	}
	t, err := time.ParseDuration(d.Timeout)
	if err != nil || t <= 0 {
		return 0, usagef("exec provider %s: timeout %q: want a duration such as 5s", d.Name, d.Timeout)
	}
	return t, nil
}

// deadlines is the one policy of budgets (resolver.Deadlines): --timeout,
// and each exec provider's own timeout:.
func (c *common) deadlines() (resolver.Deadlines, error) {
	d := resolver.Deadlines{Call: c.timeout, Own: map[string]time.Duration{}}
	for _, e := range c.execs {
		t, err := c.execTimeout(e)
		if err != nil {
			return d, err
		}
		d.Own[e.Name] = t
	}
	return d, nil
}

// openExec starts the exec providers.
func (c *common) openExec(log *slog.Logger) ([]resolver.Provider, error) {
	var out []resolver.Provider
	for _, d := range c.execs {
		t, err := c.execTimeout(d)
		if err != nil {
			return nil, err
		}
		cfg := exec.Config{Name: d.Name, Command: d.Command, Env: d.Env, Timeout: t, Concurrency: c.execConcurrency, Logger: log}
		// The program runs under secretfs itself as its reaper, so that no
		// descendant outlives it (setsid or not).
		if self, err := selfExe(); err == nil {
			cfg.Reaper = []string{self, exec.ReaperCommand}
		} else {
			log.Warn("exec providers run without a reaper: a descendant that calls setsid may outlive a call", "error", err)
		}
		if cfg.Credential, err = parseUser(d.User); err != nil {
			return nil, usagef("exec provider %s: %v", d.Name, err)
		}
		p, err := exec.New(cfg)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// parseUser reads "UID[:GID]", the user a program runs as; "" is nil (the
// daemon's own).
func parseUser(s string) (*syscall.Credential, error) {
	if s == "" {
		return nil, nil
	}
	uid, gid, _ := strings.Cut(s, ":")
	u, err := strconv.ParseUint(uid, 10, 32)
	g := u
	if err == nil && gid != "" {
		g, err = strconv.ParseUint(gid, 10, 32)
	}
	if err != nil {
		return nil, fmt.Errorf("user %q: want UID[:GID]", s)
	}
	return &syscall.Credential{Uid: uint32(u), Gid: uint32(g)}, nil
}
