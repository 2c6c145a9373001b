package main

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/secretfs/secretfs/resolver"
)

func runCapture(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, &out, &errb)
	return out.String(), errb.String(), err
}

// needs skips t unless this build has every named provider (a build with
// the tag secretfs_no_NAME leaves NAME out).
func needs(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if !slices.Contains(compiledNames(), n) {
			t.Skipf("this build has no %s provider (built with secretfs_no_%s)", n, n)
		}
	}
}

func TestGet(t *testing.T) {
	needs(t, "env")
	t.Setenv("SFS_TEST_PLAIN", "s3cret")
	t.Setenv("SFS_TEST_JSON", `{"user":"bob","port":5432}`)
	t.Setenv("VAULT_TOKEN", "must-not-show")
	tests := []struct {
		args     []string
		want     string
		wantCode int
	}{
		{[]string{"get", "env:SFS_TEST_PLAIN"}, "s3cret", exitOK},
		{[]string{"get", "env:SFS_TEST_JSON#user"}, "bob", exitOK},
		{[]string{"get", "env:SFS_TEST_JSON#port"}, "5432", exitOK},
		{[]string{"get", "env:SFS_TEST_JSON#nope"}, "", exitNotFound},
		{[]string{"get", "env:NOPE_NOT_SET"}, "", exitNotFound},
		{[]string{"get", "env:VAULT_TOKEN"}, "", exitNotFound},
		{[]string{"get", "--env-allow", "VAULT_TOKEN", "env:VAULT_TOKEN"}, "must-not-show", exitOK},
		{[]string{"get", "--env-allow", "OTHER_*", "env:SFS_TEST_PLAIN"}, "", exitNotFound},
		{[]string{"get", "env:"}, "", exitInvalidRef},
		{[]string{"get", "nocolon"}, "", exitInvalidRef},
		{[]string{"get", "aws2:x"}, "", exitUsage}, // a provider the binary lacks: named, with what it has
		{[]string{"get"}, "", exitUsage},
		{[]string{"get", "--no-such-flag", "env:X"}, "", exitUsage},
		{[]string{"get", "--providers", "nope", "env:X"}, "", exitUsage},
		{[]string{"get", "--timeout", "0s", "env:X"}, "", exitUsage},
		{[]string{"frobnicate"}, "", exitUsage},
		{nil, "", exitUsage},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, stderr, err := runCapture(t, tt.args...)
			if got := exitCode(err); got != tt.wantCode {
				t.Fatalf("exit code = %d (%v), want %d", got, err, tt.wantCode)
			}
			if out != tt.want {
				t.Errorf("stdout = %q, want %q", out, tt.want)
			}
			if err != nil && strings.Contains(err.Error()+stderr, "must-not-show") {
				t.Errorf("error %q or stderr %q contains a secret value", err, stderr)
			}
		})
	}
}

func TestLs(t *testing.T) {
	needs(t, "env")
	t.Setenv("SFS_LS_B", "1")
	t.Setenv("SFS_LS_A", "2")
	out, _, err := runCapture(t, "ls", "--env-allow", "SFS_LS_*", "env:")
	if err != nil {
		t.Fatal(err)
	}
	if want := "SFS_LS_A\nSFS_LS_B\n"; out != want {
		t.Errorf("ls = %q, want %q", out, want)
	}
	if _, _, err := runCapture(t, "ls", "env"); exitCode(err) != exitInvalidRef {
		t.Errorf("ls without colon: exit %d (%v), want %d", exitCode(err), err, exitInvalidRef)
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	needs(t, "env")
	t.Setenv("SFS_ENV_FLAG", "x")
	t.Setenv("SECRETFS_ENV_ALLOW", "NOTHING_*")
	if _, _, err := runCapture(t, "get", "env:SFS_ENV_FLAG"); !errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("SECRETFS_ENV_ALLOW ignored: err = %v, want not found", err)
	}
	// The command line wins over the environment.
	if out, _, err := runCapture(t, "get", "--env-allow", "SFS_*", "env:SFS_ENV_FLAG"); err != nil || out != "x" {
		t.Errorf("flag over env: %q, %v", out, err)
	}
	t.Setenv("SECRETFS_TIMEOUT", "soon")
	if _, _, err := runCapture(t, "get", "env:SFS_ENV_FLAG"); exitCode(err) != exitUsage || !strings.Contains(err.Error(), "SECRETFS_TIMEOUT") {
		t.Errorf("bad SECRETFS_TIMEOUT: %v, want a usage error naming it", err)
	}
}

func TestHelp(t *testing.T) {
	needs(t, "env")
	for _, args := range [][]string{{"--help"}, {"mount", "--help"}, {"get", "--help"}, {"ls", "-h"}, {"version"}} {
		out, _, err := runCapture(t, args...)
		if err != nil || out == "" {
			t.Errorf("%v: %q, %v; want output and no error", args, out, err)
		}
	}
	out, _, _ := runCapture(t, "mount", "--help")
	for _, flag := range []string{"--ttl", "--negative-ttl", "--max-stale", "--timeout", "--uid", "--gid", "--file-mode", "--dir-mode", "--allow-other", "--env-allow", "--providers", "--log-level"} {
		if !strings.Contains(out, flag) {
			t.Errorf("mount --help lacks %s", flag)
		}
	}
}

func TestMountFlagErrors(t *testing.T) {
	dir := t.TempDir()
	tests := [][]string{
		{"mount"},
		{"mount", dir, "extra"},
		{"mount", "--file-mode", "999", dir},
		{"mount", "--dir-mode", "rwx", dir},
		{"mount", "-o", "rw", dir},
		{"mount", "-o", "reconnect", dir},
		{"mount", "-o", "uid=abc", dir},
		{"mount", "--ttl", "0s", dir},
		{"mount", "--log-format", "xml", dir},
		{"mount", "--log-level", "loud", dir},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if _, _, err := runCapture(t, args...); exitCode(err) != exitUsage {
				t.Errorf("exit %d (%v), want usage", exitCode(err), err)
			}
		})
	}
}

func TestMountOptions(t *testing.T) {
	m := &mountFlags{common: newCommon("mount"), fileMode: "0440", dirMode: "0550",
		options: []string{"allow_other", "uid=1000", "gid=1001", "ro", "default_permissions"}}
	cfg, mo, err := m.fsConfig()
	if err != nil {
		t.Fatal(err)
	}
	if !mo.AllowOther || cfg.UID != 1000 || cfg.GID != 1001 || cfg.FileMode != 0o440 || cfg.DirMode != 0o550 {
		t.Errorf("cfg = %+v, mo = %+v", cfg, mo)
	}
}

func TestGetAndLsEnableTheirProvider(t *testing.T) {
	needs(t, "env", "aws", "vault")
	t.Setenv("SFS_ENABLE", "yes")
	// --providers names only aws; get env:… still enables env.
	if out, _, err := runCapture(t, "get", "--providers", "aws", "--aws-region", "us-east-1", "env:SFS_ENABLE"); err != nil || out != "yes" {
		t.Errorf("get env: with --providers aws = %q, %v", out, err)
	}
	_, _, err := runCapture(t, "get", "nosuch:x")
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "have env, aws, vault") {
		t.Errorf("get nosuch:x = %v (exit %d), want a usage error naming the providers the binary has", err, exitCode(err))
	}
	if _, _, err := runCapture(t, "ls", "env:NOPE"); exitCode(err) != exitNotFound {
		t.Errorf("ls env:NOPE: exit %d (%v), want %d", exitCode(err), err, exitNotFound)
	}
	t.Setenv("SFS_LS_H#F", "hidden")
	t.Setenv("SFS_LS_OK", "shown")
	if out, _, err := runCapture(t, "ls", "--env-allow", "SFS_LS_*", "env:"); err != nil || out != "SFS_LS_OK\n" {
		t.Errorf("ls env: = %q, %v; want only the names a path can reach", out, err)
	}
}

func TestProviderAndModeFlagErrors(t *testing.T) {
	needs(t, "env")
	dir := t.TempDir()
	for _, args := range [][]string{
		{"mount", "--providers", "", dir},
		{"mount", "--providers", ",", dir},
		{"mount", "--dir-mode", "0400", dir},
		{"get", "--providers", "", "--env-allow", "X", "nosuch:x"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if _, _, err := runCapture(t, args...); exitCode(err) != exitUsage {
				t.Errorf("exit %d (%v), want usage", exitCode(err), err)
			}
		})
	}
	m := &mountFlags{common: newCommon("mount"), fileMode: "0400", dirMode: "0500", options: []string{"allow_other", "", "ro"}}
	if _, mo, err := m.fsConfig(); err != nil || !mo.AllowOther {
		t.Errorf("-o allow_other,,ro = %+v, %v; want allow_other and the empty entry skipped", mo, err)
	}
}

func TestHelperFlags(t *testing.T) {
	needs(t, "env")
	tests := []struct {
		opts []string
		want string
	}{
		{[]string{"providers=env:aws", "file_mode=0440", "ttl=1m", "_netdev", "nofail", "x-systemd.automount", "rw", "defaults", "nosuid"},
			"--providers=env,aws --file-mode=0440 --ttl=1m"},
		{[]string{"allow_other", "uid=1000", "default_permissions", "env-allow=A_*:B_*"},
			"--allow-other --uid=1000 --env-allow=A_*,B_* -o default_permissions"},
		{[]string{"", "noauto", "comment=x-gvfs-hide"}, ""},
	}
	for _, tt := range tests {
		got, err := helperFlags(helperName, tt.opts)
		if err != nil || strings.Join(got, " ") != tt.want {
			t.Errorf("helperFlags(%q) = %q, %v; want %q", tt.opts, got, err, tt.want)
		}
	}
	for _, bad := range [][]string{{"nosuchoption=1"}, {"ttl"}, {"options=ro"}} {
		if _, err := helperFlags(helperName, bad); exitCode(err) != exitUsage {
			t.Errorf("helperFlags(%q) = %v, want a usage error", bad, err)
		}
	}
	if _, _, err := runCapture(t, "mount-helper", "secretfs"); exitCode(err) != exitUsage {
		t.Errorf("the helper without a mountpoint: %v, want usage", err)
	}
	dir := t.TempDir()
	if _, _, err := runCapture(t, "mount-helper", "secretfs", dir, "-f", "-o", "ttl=soon"); exitCode(err) != exitUsage {
		t.Errorf("the helper with a bad value: %v, want usage", err)
	}
	if _, _, err := runCapture(t, "mount-helper", "secretfs", dir, "-f", "-o", "ttl=1m,providers=env"); err != nil {
		t.Errorf("the helper's fake mount (-f): %v", err)
	}
}

// Whatever providers a build has, one it lacks is a usage error that says
// what the binary has, for mount, get and ls alike; and version lists them.
func TestProvidersOfThisBuild(t *testing.T) {
	has := compiledNames()
	for flag, p := range map[string]string{"--aws-region=x": "aws", "--vault-addr=x": "vault", "--env-allow=x": "env"} {
		if slices.Contains(has, p) {
			continue
		}
		_, _, err := runCapture(t, "get", flag, "x:y")
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "not compiled into this binary") {
			t.Errorf("%s without %s: %v, want a usage error saying the provider is not compiled in", flag, p, err)
		}
	}
	out, _, err := runCapture(t, "version")
	if err != nil || !strings.Contains(out, "\nproviders: "+strings.Join(has, ", ")+"\n") {
		t.Errorf("version = %q, %v; want a line providers: %s", out, err, strings.Join(has, ", "))
	}
	for _, name := range builtinProviders {
		if slices.Contains(has, name) {
			continue
		}
		for _, args := range [][]string{{"mount", "--providers", name, t.TempDir()}, {"get", name + ":x"}, {"ls", name + ":"},
			{"csi-provider", "--endpoint", t.TempDir() + "/s.sock", "--providers", name}} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				_, _, err := runCapture(t, args...)
				want := "not compiled into this binary, which has " + strings.Join(has, ", ")
				if exitCode(err) != exitUsage || !strings.Contains(err.Error(), want) {
					t.Errorf("exit %d (%v), want %d and %q", exitCode(err), err, exitUsage, want)
				}
			})
		}
	}
}
