package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/config"
)

type settings struct {
	set    *pflag.FlagSet
	ttl    time.Duration
	allow  []string
	level  string
	config string
	count  int
}

func newSettings() *settings {
	s := &settings{set: pflag.NewFlagSet("t", pflag.ContinueOnError)}
	s.set.DurationVar(&s.ttl, "ttl", time.Minute, "")
	s.set.StringSliceVar(&s.allow, "env-allow", []string{"*"}, "")
	s.set.StringVar(&s.level, "log-level", "info", "")
	s.set.StringVar(&s.config, config.FlagName, "", "")
	s.set.IntVar(&s.count, "max-entries", 10, "")
	return s
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secretfs.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	file := writeConfig(t, "ttl: 5m\nenv_allow: [A_*, B_*]\nlog-level: debug\nmax-entries: 7\n")
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantTTL   time.Duration
		wantAllow string
		wantLevel string
		wantCount int
	}{
		{"file only", nil, nil, 5 * time.Minute, "A_*,B_*", "debug", 7},
		{"env over file", nil, map[string]string{"SECRETFS_TTL": "2m", "SECRETFS_ENV_ALLOW": "E_*"}, 2 * time.Minute, "E_*", "debug", 7},
		{"flag over env and file", []string{"--ttl", "1s", "--log-level", "warn"}, map[string]string{"SECRETFS_TTL": "2m"}, time.Second, "A_*,B_*", "warn", 7},
		{"defaults without a file", []string{"--config", ""}, nil, time.Minute, "*", "info", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSettings()
			args := append([]string{"--config", file}, tt.args...)
			if err := s.set.Parse(args); err != nil {
				t.Fatal(err)
			}
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			if _, err := config.Sources(s.set, lookup, nil); err != nil {
				t.Fatal(err)
			}
			if s.ttl != tt.wantTTL || strings.Join(s.allow, ",") != tt.wantAllow || s.level != tt.wantLevel || s.count != tt.wantCount {
				t.Errorf("got ttl %v allow %q level %q entries %d; want %v %q %q %d",
					s.ttl, s.allow, s.level, s.count, tt.wantTTL, tt.wantAllow, tt.wantLevel, tt.wantCount)
			}
		})
	}
}

func TestBadFiles(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"unknown key", "ttl: 1m\nttls: 2m\n", `unknown key "ttls"`},
		{"bad value", "ttl: soon\n", "ttl"},
		{"a list for one value", "ttl: [1m, 2m]\n", "takes one value"},
		{"not a mapping", "- ttl\n", "want a mapping"},
		{"a mapping as a value", "ttl: {a: 1}\n", "want a value or a list"},
		{"the config key itself", "config: other.yaml\n", `unknown key "config"`},
		{"bad YAML", "ttl: [\n", "secretfs.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSettings()
			s.set.Parse([]string{"--config", writeConfig(t, tt.text)})
			_, err := config.Sources(s.set, func(string) (string, bool) { return "", false }, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one that says %q", err, tt.want)
			}
		})
	}
	s := newSettings()
	s.set.Parse([]string{"--config", "/nonexistent/secretfs.yaml"})
	if _, err := config.Sources(s.set, func(string) (string, bool) { return "", false }, nil); err == nil {
		t.Error("a missing file: no error")
	}
}

func TestSectionsAndEmptyFile(t *testing.T) {
	s := newSettings()
	s.set.Parse([]string{"--config", writeConfig(t, "rules:\n  - path: a/**\nttl: 3m\n")})
	sections, err := config.Sources(s.set, func(string) (string, bool) { return "", false }, []string{"rules"})
	if err != nil || sections["rules"] == nil || s.ttl != 3*time.Minute {
		t.Errorf("sections %v, ttl %v, %v; want the rules section kept and ttl set", sections, s.ttl, err)
	}
	s = newSettings()
	s.set.Parse([]string{"--config", writeConfig(t, "")})
	if _, err := config.Sources(s.set, func(string) (string, bool) { return "", false }, nil); err != nil || s.ttl != time.Minute {
		t.Errorf("an empty file: ttl %v, %v; want the defaults", s.ttl, err)
	}
}
