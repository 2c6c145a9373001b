package exec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// script writes a shell provider and returns its provider.
func script(t *testing.T, body string, cfg Config) *Provider {
	t.Helper()
	p := filepath.Join(t.TempDir(), "provider.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Name, cfg.Command = "x", []string{p}
	prov, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return prov
}

const contract = `case "$1 $2" in
"get plain") printf 'value with\nnewline' ;;
"get gone") exit 3 ;;
"get denied") exit 5 ;;
"get env") printf '%s|%s' "$PASSED" "$HIDDEN" ;;
"get big") head -c 2000000 /dev/zero ;;
"get weird") exit 42 ;;
"get versioned") [ -n "$3" ] && exit 2; printf current ;;
"list ") printf 'a\nb/\n' ;;
"list nolist") exit 2 ;;
*) exit 3 ;;
esac
`

func TestContract(t *testing.T) {
	t.Setenv("PASSED", "yes")
	t.Setenv("HIDDEN", "no")
	p := script(t, contract, Config{Env: []string{"PASSED"}, Timeout: 5 * time.Second})
	ctx := context.Background()
	tests := []struct {
		key, version string
		want         string
		wantErr      error
	}{
		{"plain", "", "value with\nnewline", nil},
		{"gone", "", "", resolver.ErrNotFound},
		{"denied", "", "", resolver.ErrPermission},
		{"env", "", "yes|", nil}, // only the names passed through
		{"big", "", "", resolver.ErrUnavailable},
		{"weird", "", "", resolver.ErrUnavailable},
		{"versioned", "", "current", nil},
		{"versioned", "v1", "", resolver.ErrNotFound},
	}
	for _, tt := range tests {
		s, err := p.Get(ctx, tt.key, tt.version)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("get %s %s: %v, want %v", tt.key, tt.version, err, tt.wantErr)
			}
			continue
		}
		if err != nil || string(s.Value) != tt.want {
			t.Errorf("get %s %s = %q, %v; want %q", tt.key, tt.version, s.Value, err, tt.want)
		}
	}
	if names, err := p.List(ctx, ""); err != nil || strings.Join(names, ",") != "a,b/" {
		t.Errorf("list = %q, %v", names, err)
	}
	if _, err := p.List(ctx, "nolist"); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("list that cannot: %v, want ErrUnsupported", err)
	}
}

func TestHangKillsTheGroup(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "grandchild-alive")
	p := script(t, `(sleep 3; touch `+marker+`) & sleep 30`, Config{Timeout: 300 * time.Millisecond})
	start := time.Now()
	_, err := p.Get(context.Background(), "k", "")
	if !errors.Is(err, resolver.ErrUnavailable) || time.Since(start) > 3*time.Second {
		t.Fatalf("a hanging program: %v after %v, want unavailable within the timeout", err, time.Since(start))
	}
	time.Sleep(3500*time.Millisecond - time.Since(start))
	if _, err := os.Stat(marker); err == nil {
		t.Error("a grandchild outlived the call")
	}
}

func TestTrust(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the trust checks apply to a daemon that runs as root")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "p.sh")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	os.Chmod(p, 0o777)
	if _, err := New(Config{Name: "x", Command: []string{p}}); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Errorf("a world-writable program: %v, want refused", err)
	}
	os.Chmod(p, 0o755)
	os.Chown(p, 1234, 0)
	if _, err := New(Config{Name: "x", Command: []string{p}}); err == nil || !strings.Contains(err.Error(), "owned by uid 1234") {
		t.Errorf("a program of another user: %v, want refused", err)
	}
}

// A key was passed to the program as an argument as it was: `cat
// MNT/p/--help` ran `PROGRAM get --help`. Keys, versions and directories
// that start with '-' are not found, and the program is not run.
func TestKeysAreNeverOptions(t *testing.T) {
	ran := filepath.Join(t.TempDir(), "ran")
	p := script(t, `echo "$@" >> `+ran+`; printf value`, Config{Timeout: 5 * time.Second})
	ctx := context.Background()
	for _, tt := range []struct{ key, version string }{{"--help", ""}, {"-x", ""}, {"k", "--version"}, {"k", "-1"}} {
		if _, err := p.Get(ctx, tt.key, tt.version); !errors.Is(err, resolver.ErrNotFound) {
			t.Errorf("Get(%q, %q) = %v, want ErrNotFound", tt.key, tt.version, err)
		}
	}
	if _, err := p.List(ctx, "-r"); !errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("List(-r) = %v, want ErrNotFound", err)
	}
	if data, err := os.ReadFile(ran); err == nil {
		t.Errorf("the program ran with %q", data)
	}
	if v, err := p.Get(ctx, "a/-b", ""); err != nil || string(v.Value) != "value" {
		t.Errorf("a key with '-' inside: %q, %v", v.Value, err)
	}
}

// With a world-writable directory above a root-owned 0755 program, anyone
// could mv another program over it, and the next lookup ran it as root.
// The path is checked as sshd's StrictModes checks, at start and before
// every call, and a program that changed since is refused, never run.
// worldWritable makes dir/name, a directory anyone may write (mode 0777,
// whatever the umask).
func worldWritable(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.Mkdir(p, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o777); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProgramIsTrustedAlongItsPathAndEveryCall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes directories owned by another user")
	}
	write := func(path, body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("a directory others may write", func(t *testing.T) {
		dir := worldWritable(t, t.TempDir(), "open")
		write(filepath.Join(dir, "prov"), "printf v")
		if _, err := New(Config{Name: "x", Command: []string{filepath.Join(dir, "prov")}}); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
			t.Errorf("New = %v; want the directory refused", err)
		}
	})
	t.Run("a sticky directory whose next component another user owns", func(t *testing.T) {
		sticky := filepath.Join(t.TempDir(), "sticky")
		os.Mkdir(sticky, 0o777)
		os.Chmod(sticky, 0o777|os.ModeSticky)
		theirs := filepath.Join(sticky, "theirs")
		os.Mkdir(theirs, 0o755)
		write(filepath.Join(theirs, "prov"), "printf v")
		os.Chown(theirs, 1000, 1000)
		if _, err := New(Config{Name: "x", Command: []string{filepath.Join(theirs, "prov")}}); err == nil {
			t.Error("New: no error; want a directory of another user refused")
		}
		mine := filepath.Join(sticky, "mine")
		os.Mkdir(mine, 0o755)
		write(filepath.Join(mine, "prov"), "printf v")
		if _, err := New(Config{Name: "x", Command: []string{filepath.Join(mine, "prov")}}); err != nil {
			t.Errorf("New below a sticky directory, in root's own: %v", err)
		}
	})
	t.Run("an interpreter others may replace", func(t *testing.T) {
		dir := t.TempDir()
		open := worldWritable(t, dir, "open")
		data, _ := os.ReadFile("/bin/sh")
		os.WriteFile(filepath.Join(open, "sh"), data, 0o755)
		prov := filepath.Join(dir, "prov")
		os.WriteFile(prov, []byte("#!"+filepath.Join(open, "sh")+"\nprintf v"), 0o755)
		if _, err := New(Config{Name: "x", Command: []string{prov}}); err == nil || !strings.Contains(err.Error(), "interpreter") {
			t.Errorf("New = %v; want the interpreter refused", err)
		}
	})
	t.Run("a symlink through a directory others may write", func(t *testing.T) {
		// prov's path is trusted as named and as resolved, but a link on
		// the way lies in a directory anyone may write: swapping it ran
		// another program as root.
		dir := t.TempDir()
		good, open := filepath.Join(dir, "good"), worldWritable(t, dir, "open")
		os.Mkdir(good, 0o755)
		write(filepath.Join(good, "prov"), "printf v")
		os.Symlink(good, filepath.Join(open, "cur"))
		os.Symlink(filepath.Join(open, "cur"), filepath.Join(dir, "app"))
		if _, err := New(Config{Name: "x", Command: []string{filepath.Join(dir, "app", "prov")}}); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
			t.Errorf("New = %v; want the directory of the link refused", err)
		}
	})
	t.Run("interpreters env finds, and nested ones", func(t *testing.T) {
		dir := t.TempDir()
		open := worldWritable(t, dir, "open")
		data, _ := os.ReadFile("/bin/sh")
		os.WriteFile(filepath.Join(open, "evilsh"), data, 0o755)
		viaEnv := filepath.Join(dir, "via-env")
		os.WriteFile(viaEnv, []byte("#!/usr/bin/env evilsh\nprintf v"), 0o755)
		if _, err := interpreters(viaEnv, open+":/usr/bin:/bin"); err == nil {
			t.Error("#!/usr/bin/env with the program in a directory others may write: no error")
		}
		if _, err := interpreters(viaEnv, "/usr/bin:/bin"); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("#!/usr/bin/env evilsh, not on PATH: %v", err)
		}
		wrapper := filepath.Join(dir, "wrapper")
		os.WriteFile(wrapper, []byte("#!"+filepath.Join(open, "evilsh")+"\n"), 0o755)
		nested := filepath.Join(dir, "nested")
		os.WriteFile(nested, []byte("#!"+wrapper+"\nprintf v"), 0o755)
		if _, err := interpreters(nested, "/usr/bin:/bin"); err == nil {
			t.Error("a trusted interpreter whose own #! names an untrusted one: no error")
		}
		fine := filepath.Join(dir, "fine")
		os.WriteFile(fine, []byte("#!/usr/bin/env sh\nprintf v"), 0o755)
		if got, err := interpreters(fine, "/usr/bin:/bin"); err != nil || len(got) != 2 {
			t.Errorf("#!/usr/bin/env sh: %v, %v; want env and sh checked", got, err)
		}
	})
	t.Run("replaced after start", func(t *testing.T) {
		dir := t.TempDir()
		prov, ran := filepath.Join(dir, "prov"), filepath.Join(dir, "ran")
		write(prov, "printf v")
		p, err := New(Config{Name: "x", Command: []string{prov}, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if v, err := p.Get(context.Background(), "k", ""); err != nil || string(v.Value) != "v" {
			t.Fatalf("Get = %q, %v", v.Value, err)
		}
		write(prov+".new", "touch "+ran+"; printf evil")
		if err := os.Rename(prov+".new", prov); err != nil {
			t.Fatal(err)
		}
		before := Refused()
		if _, err := p.Get(context.Background(), "k", ""); !errors.Is(err, resolver.ErrUnavailable) || !strings.Contains(err.Error(), "changed") {
			t.Errorf("Get after the program was replaced = %v; want it refused", err)
		}
		if _, err := os.Stat(ran); err == nil {
			t.Error("the replacement ran")
		}
		if Refused() != before+1 {
			t.Errorf("refused %d, want %d", Refused(), before+1)
		}
	})
}

// A descendant that left the process group (setsid) wrote into the value
// after the program exited: `setsid sh -c "sleep .5; printf LATE" & printf
// early` gave "earlyLATE". Under a reaper every descendant is ended when
// the program exits, and nothing written after is part of a value.
func TestLateOutputOfADetachedDescendantIsNoPartOfTheValue(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	late := filepath.Join(dir, "late")
	p := script(t, `setsid sh -c "sleep .5; printf LATE; touch `+late+`" & sleep .2; printf early`,
		Config{Timeout: 5 * time.Second, Reaper: []string{self, ReaperCommand}})
	v, err := p.Get(context.Background(), "k", "")
	if err != nil || string(v.Value) != "early" {
		t.Errorf("Get = %q, %v; want early", v.Value, err)
	}
	time.Sleep(time.Second)
	if _, err := os.Stat(late); err == nil {
		t.Error("the detached descendant outlived the call")
	}
	// The deadline: the reaper ends the descendants too.
	hung := filepath.Join(dir, "hung")
	p = script(t, `setsid sh -c "sleep 1.5; touch `+hung+`" & sleep 30`,
		Config{Timeout: 300 * time.Millisecond, Reaper: []string{self, ReaperCommand}})
	if _, err := p.Get(context.Background(), "k", ""); !errors.Is(err, resolver.ErrUnavailable) {
		t.Errorf("Get past the deadline = %v, want ErrUnavailable", err)
	}
	time.Sleep(2 * time.Second)
	if _, err := os.Stat(hung); err == nil {
		t.Error("a detached descendant outlived the deadline")
	}
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ReaperCommand {
		os.Exit(Reap(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// A program run as another user started a setuid-root helper that made
// itself root and left the group: the reaper, running as that user, could
// not kill it. No descendant gains privileges now: the program runs with
// no_new_privs (set on the thread the reaper starts it from), so setuid
// bits do nothing below the reaper and it can end everything.
func TestProgramsRunWithNoNewPrivs(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	p := script(t, `grep NoNewPrivs /proc/self/status | tr -dc 0-9`,
		Config{Timeout: 5 * time.Second, Reaper: []string{self, ReaperCommand}})
	for i := range 5 { // the reaper's threads are many; every time
		v, err := p.Get(context.Background(), "k", "")
		if err != nil || string(v.Value) != "1" {
			t.Errorf("run %d: NoNewPrivs of the program = %q, %v; want 1", i, v.Value, err)
		}
	}
}
