package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad on-change entries are usage errors that say what is wrong.
func TestOnChangeConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown key", "on-change:\n  - secrets: [env:A]\n    command: [/bin/true]\n    sigal: HUP\n", "sigal"},
		{"nothing named", "on-change:\n  - command: [/bin/true]\n", "names no secrets"},
		{"no action", "on-change:\n  - secrets: [env:A]\n", "needs a command or a signal"},
		{"both", "on-change:\n  - secrets: [env:A]\n    command: [/bin/true]\n    signal: HUP\n    pid-file: /run/x.pid\n", "not both"},
		{"bad signal", "on-change:\n  - secrets: [env:A]\n    signal: HUPP\n    pid-file: /run/x.pid\n", `signal "HUPP"`},
		{"signal without pid file", "on-change:\n  - secrets: [env:A]\n    signal: HUP\n", "needs pid-file"},
		{"pid file without signal", "on-change:\n  - secrets: [env:A]\n    command: [/bin/true]\n    pid-file: /run/x.pid\n", "pid-file goes with signal"},
		{"bad debounce", "on-change:\n  - secrets: [env:A]\n    command: [/bin/true]\n    debounce: soon\n", `debounce "soon"`},
		{"bad user", "on-change:\n  - secrets: [env:A]\n    command: [/bin/true]\n    user: nobody\n", "want UID[:GID]"},
		{"bad reference", "on-change:\n  - secrets: [\"env\"]\n    command: [/bin/true]\n", "env"},
		{"unknown template", "on-change:\n  - templates: [nope]\n    command: [/bin/true]\n", `no template "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(conf, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, stderr, err := runCapture(t, "mount", "--config", conf, t.TempDir())
			if got, want := exitCode(err), exitUsage; got != want {
				t.Fatalf("exit %d (%v), want %d", got, err, want)
			}
			if msg := stderr + errString(err); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not say %q", msg, tc.want)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
