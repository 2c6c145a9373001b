// A configuration reload (SIGHUP): what changes in place, and what is
// logged as needing a restart.

package main

import (
	"log/slog"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/secretfs/secretfs/audit"
	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/fs"
	"github.com/secretfs/secretfs/resolver"
)

// reloadables are the running parts a reload changes in place.
type reloadables struct {
	cache     *cache.Cache
	providers []resolver.Provider
	files     []reopener // the log file, where there is one
	trail     *audit.Log // the audit trail, where there is one
	fs        *fs.Server
}

type reopener interface{ Reopen() error }

// live are the flags a reload applies without remounting.
var live = []string{"ttl", "negative-ttl", "max-stale", "env-allow", "log-level"}

// apply makes the running configuration m into next, as far as that can
// happen without remounting, and logs what needs a restart.
func (m *mountFlags) apply(next *mountFlags, run reloadables, log *slog.Logger) {
	var restart []string
	next.flagSet.VisitAll(func(f *pflag.Flag) {
		cur := m.flagSet.Lookup(f.Name)
		if cur == nil || cur.Value.String() == f.Value.String() || slices.Contains(live, f.Name) {
			return
		}
		restart = append(restart, "--"+f.Name)
	})
	for key, pair := range map[string][2]*yaml.Node{
		"templates:": {m.templateSection, next.templateSection}, "exec-providers:": {m.execSection, next.execSection},
		"on-change:": {m.onChangeSection, next.onChangeSection},
	} {
		if yamlText(pair[0]) != yamlText(pair[1]) {
			restart = append(restart, key)
		}
	}
	slices.Sort(restart)
	if len(restart) > 0 {
		msg := "these settings changed and need a restart (remount); the running values stay"
		if m.auditLog == "" && next.auditLog != "" || m.auditLog != "" && next.auditLog == "" {
			msg += "; switching between the fast mode and the audit mode is fixed by the kernel for the life of a mount"
		}
		log.Warn(msg, "settings", strings.Join(restart, " "))
	}
	run.cache.SetTimes(next.ttl, next.negTTL, next.maxStale)
	m.ttl, m.negTTL, m.maxStale = next.ttl, next.negTTL, next.maxStale
	if cur, nxt := m.flagSet.Lookup("env-allow"), next.flagSet.Lookup("env-allow"); cur.Value.String() != nxt.Value.String() {
		for _, p := range run.providers {
			if e, ok := p.(interface{ SetAllow([]string) error }); ok {
				allow, _ := next.flagSet.GetStringSlice("env-allow")
				if err := e.SetAllow(allow); err != nil {
					log.Error("env-allow not changed", "error", err)
					continue
				}
				if sv, ok := cur.Value.(pflag.SliceValue); ok {
					sv.Replace(allow)
				}
				run.cache.Forget(p.Name(), "") // what it shows changed
			}
		}
	}
	if level, err := next.level(); err == nil {
		m.levelVar.Set(level)
		m.logLevel = next.logLevel
	}
	for _, f := range run.files {
		if err := f.Reopen(); err != nil {
			log.Error("log file not reopened", "error", err)
		}
	}
	if run.trail != nil {
		if err := run.trail.Reopen(); err != nil {
			log.Error("audit log not reopened", "error", err)
		}
	}
	if err := run.fs.SetRules(next.rules); err != nil {
		log.Warn("the new rules need a restart; the old rules stay", "error", err)
	} else {
		m.rules = next.rules
	}
	log.Info("configuration reloaded", "ttl", m.ttl, "negative_ttl", m.negTTL, "max_stale", m.maxStale, "log_level", m.logLevel)
}

// yamlText is a config section as text, to compare two; "" for none.
func yamlText(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	b, _ := yaml.Marshal(n)
	return string(b)
}
