package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A volume's options are the mount's long flags, as in fstab; those that
// name a host file, run a program or send the plugin's credentials
// elsewhere are refused, and so is the env provider without --allow-env.
func TestVolumeOptions(t *testing.T) {
	if !slices.Contains(compiledNames(), "aws") || !slices.Contains(compiledNames(), "vault") {
		t.Skip("the cases name flags of the aws and vault providers, which this build lacks")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules:\n  - path: aws/**\n    mode: \"0440\"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "exec.yaml"), []byte("exec-providers:\n  - name: x\n    command: [/bin/true]\n"), 0o600)
	p, err := newDockerPlugin([]string{"--providers", "aws", "--aws-region", "eu-west-1", "--ttl", "1m", "--config-dir", dir,
		"--state-file", filepath.Join(dir, "state"), "--base-dir", filepath.Join(dir, "base")}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		opts map[string]string
		want []string // in the mount's arguments
		err  string   // in the error
	}{
		{"defaults", nil, []string{"--providers=aws", "--aws-region=eu-west-1", "--ttl=1m0s", "--allow-other"}, ""},
		{"own settings win", map[string]string{"providers": "aws:vault", "file_mode": "0440", "ttl": "1s"},
			[]string{"--providers=aws,vault", "--file-mode=0440", "--ttl=1s", "--aws-region=eu-west-1"}, ""},
		{"config from the config dir", map[string]string{"config": "rules.yaml"}, []string{"--config=" + filepath.Join(dir, "rules.yaml")}, ""},
		{"config elsewhere", map[string]string{"config": "../etc/x"}, nil, "config"},
		{"config with exec providers", map[string]string{"config": "exec.yaml"}, nil, "exec provider x"},
		{"env", map[string]string{"providers": "env"}, nil, "--allow-env"},
		{"audit log", map[string]string{"audit_log": "/etc/passwd"}, nil, "audit_log is not offered to volumes"},
		{"template", map[string]string{"template": "t=/etc/shadow"}, nil, "not offered"},
		{"exec provider", map[string]string{"exec-provider": "x=/bin/sh"}, nil, "not offered"},
		{"vault address", map[string]string{"vault_addr": "http://evil:8200"}, nil, "not offered"},
		{"metrics", map[string]string{"metrics_addr": "0.0.0.0:1"}, nil, "not offered"},
		// It would replace the operator's list, and may name credentials.
		{"env allow", map[string]string{"env_allow": "AWS_SECRET_ACCESS_KEY"}, nil, "env_allow is not offered"},
		{"a plugin flag", map[string]string{"base_dir": "/"}, nil, "unknown option"},
		{"unknown", map[string]string{"colour": "blue"}, nil, `unknown option "colour"`},
		{"bad value", map[string]string{"ttl": "soon"}, nil, "ttl"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args, err := p.check("vol", tt.opts)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("check(%v) = %q, %v; want an error with %q", tt.opts, args, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("check(%v): %v", tt.opts, err)
			}
			for _, w := range tt.want {
				if !slices.Contains(args, w) {
					t.Errorf("check(%v) = %q, want %s in it", tt.opts, args, w)
				}
			}
			if n := len(slices.DeleteFunc(slices.Clone(args), func(a string) bool { return !strings.HasPrefix(a, "--providers=") })); n != 1 {
				t.Errorf("check(%v) = %q: %d --providers, want 1", tt.opts, args, n)
			}
		})
	}
	// With --allow-env, env is offered.
	p.flags.allowEnv = true
	if _, err := p.check("vol", map[string]string{"providers": "env"}); err != nil {
		t.Errorf("env with --allow-env: %v", err)
	}
}

// The plugin's own flags: its --config sets flags only, and no flag that
// every volume's mount would share a resource through.
func TestPluginFlags(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "plugin.yaml")
	os.WriteFile(conf, []byte("rules:\n  - path: \"**\"\n    mode: \"0400\"\n"), 0o600)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", conf}, "rules, templates and exec-providers go in a volume's file"},
		{[]string{"--metrics-addr", "127.0.0.1:0"}, "--metrics-addr"},
		{[]string{"--name", "../x"}, "--name"},
		{[]string{"extra"}, "no arguments"},
	} {
		if _, err := newDockerPlugin(append(tt.args, "--state-file", filepath.Join(dir, "s"), "--base-dir", filepath.Join(dir, "b")), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("serve docker %q: %v, want an error with %q", tt.args, err, tt.want)
		}
	}
	p, err := newDockerPlugin([]string{"--socket-addr", "127.0.0.1:0", "--state-file", filepath.Join(dir, "s"), "--base-dir", filepath.Join(dir, "b")}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := p.listen(); err == nil || !strings.Contains(err.Error(), "--allow-tcp") {
		t.Errorf("a TCP address without --allow-tcp: %v", err)
	}
}
