package main

import (
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/secretfs/secretfs/config"
	"github.com/secretfs/secretfs/onchange"
	"github.com/secretfs/secretfs/templates"
)

// onChangeDef is one on-change entry of the config file.
type onChangeDef struct {
	Name       string   `yaml:"name"`
	Secrets    []string `yaml:"secrets"`   // references or globs, as written or as paths below the mount
	Templates  []string `yaml:"templates"` // template names
	Command    []string `yaml:"command"`
	Signal     string   `yaml:"signal"`
	PidFile    string   `yaml:"pid-file"`
	Debounce   string   `yaml:"debounce"`
	Timeout    string   `yaml:"timeout"`
	RunAtStart bool     `yaml:"run-at-start"`
	User       string   `yaml:"user"` // "UID[:GID]" to run as
}

// onChanges gathers the on-change entries of --on-change REF=COMMAND and
// of the config file's on-change:, checked against the templates.
func onChanges(flags []string, section *yaml.Node, ts []*templates.Template) ([]onchange.Entry, error) {
	var out []onchange.Entry
	for i, f := range flags {
		ref, command, ok := strings.Cut(f, "=")
		if !ok || ref == "" || strings.TrimSpace(command) == "" {
			return nil, usagef("--on-change %q: want REF=COMMAND (a reference that holds '=' needs the config file)", f)
		}
		t, err := onchange.ParseTarget(ref)
		if err != nil {
			return nil, usagef("--on-change: %v", err)
		}
		out = append(out, onchange.Entry{Name: "flag-" + strconv.Itoa(i+1), Targets: []onchange.Target{t}, Command: []string{"/bin/sh", "-c", command}})
	}
	if section != nil {
		var defs []onChangeDef
		if err := config.Decode(section, &defs); err != nil {
			return nil, usagef("--config: on-change: %v", err)
		}
		for i, d := range defs {
			e, err := d.entry(i)
			if err != nil {
				return nil, usagef("--config: on-change: %v", err)
			}
			out = append(out, e)
		}
	}
	for _, e := range out {
		for _, t := range e.Targets {
			if t.Template == "" {
				continue
			}
			if !templateNamed(ts, t.Template) {
				return nil, usagef("on-change %s: no template %q", e.Name, t.Template)
			}
		}
	}
	return out, nil
}

func templateNamed(ts []*templates.Template, name string) bool {
	for _, t := range ts {
		if t.Name == name {
			return true
		}
	}
	return false
}

// entry checks d, the config file's entry number i (from 0).
func (d onChangeDef) entry(i int) (onchange.Entry, error) {
	e := onchange.Entry{Name: d.Name, Command: d.Command, PidFile: d.PidFile, RunAtStart: d.RunAtStart}
	if e.Name == "" {
		e.Name = strconv.Itoa(i + 1)
	}
	fail := func(format string, args ...any) (onchange.Entry, error) {
		return onchange.Entry{}, usagef("entry %s: "+format, append([]any{e.Name}, args...)...)
	}
	for _, s := range d.Secrets {
		t, err := onchange.ParseTarget(s)
		if err != nil {
			return fail("%v", err)
		}
		e.Targets = append(e.Targets, t)
	}
	for _, name := range d.Templates {
		e.Targets = append(e.Targets, onchange.Target{Template: name})
	}
	if len(e.Targets) == 0 {
		return fail("names no secrets and no templates")
	}
	switch {
	case len(d.Command) > 0 && d.Signal != "":
		return fail("command or signal, not both")
	case len(d.Command) == 0 && d.Signal == "":
		return fail("needs a command or a signal (with pid-file)")
	case d.Signal != "":
		sig := signalNamed(d.Signal)
		if sig == 0 {
			return fail("signal %q: want a name such as HUP or USR1", d.Signal)
		}
		if d.PidFile == "" {
			return fail("signal needs pid-file")
		}
		e.Signal = sig
	case d.PidFile != "":
		return fail("pid-file goes with signal")
	}
	for _, dur := range []struct {
		s   string
		dst *time.Duration
		key string
	}{{d.Debounce, &e.Debounce, "debounce"}, {d.Timeout, &e.Timeout, "timeout"}} {
		if dur.s == "" {
			continue
		}
		v, err := time.ParseDuration(dur.s)
		if err != nil || v <= 0 {
			return fail("%s %q: want a duration such as 1s", dur.key, dur.s)
		}
		*dur.dst = v
	}
	cred, err := parseUser(d.User)
	if err != nil {
		return fail("%v", err)
	}
	if cred != nil && e.Signal != 0 {
		return fail("user goes with a command")
	}
	e.Credential = cred
	return e, nil
}

// signalNamed is the signal a name gives (HUP, SIGHUP, hup); zero for none.
func signalNamed(name string) syscall.Signal {
	return unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(name), "SIG"))
}
