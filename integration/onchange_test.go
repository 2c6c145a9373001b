package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeScript writes an executable shell script in a directory of its own
// (root's, not writable by others: it passes the trust checks).
func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// lines reads the non-empty lines of a file (none while it is missing).
func lines(p string) []string {
	data, _ := os.ReadFile(p)
	var out []string
	for l := range strings.Lines(string(data)) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// nginx-style: a process that re-reads its file on SIGHUP, told by an
// on-change entry with signal: HUP and its pid file, reads the new value:
// the signal comes after the new value is visible through the mount.
func TestOnChangeSignalsAReloadingProcess(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"tls/cert": "cert-1"})
	work := t.TempDir()
	pidFile, seen := filepath.Join(work, "server.pid"), filepath.Join(work, "seen")
	conf := filepath.Join(t.TempDir(), "secretfs.yaml")
	dir := t.TempDir()
	cert := filepath.Join(dir, "test", "tls", "cert")
	os.WriteFile(conf, []byte(`on-change:
  - name: server
    secrets: [test/tls/cert]
    signal: HUP
    pid-file: `+pidFile+"\n"), 0o600)
	d := mountAt(t, dir, nil, "--providers", "test", "--test-dir", b.Dir, "--ttl", "500ms", "--config", conf)
	d.waitLog(t, "on-change: watching", "the runner has read what it watches")
	// The server reads the file at start and again on every SIGHUP.
	server := writeScript(t, `reload() { cat "$1" > "$2.tmp"; echo >> "$2.tmp"; cat "$2.tmp" >> "$2"; }
trap 'reload "$1" "$2"' HUP
reload "$1" "$2"
echo $$ > "$3"
while :; do sleep 0.05; done
`)
	startServer(t, server, cert, seen, pidFile)
	eventually(t, 5*time.Second, "the server starts", func() bool { return len(lines(seen)) == 1 && lines(pidFile) != nil })

	for i, next := range []string{"cert-2", "cert-3"} {
		changed := time.Now()
		b.write("tls/cert", next)
		eventually(t, 10*time.Second, "the server reloads", func() bool { return len(lines(seen)) == i+2 })
		t.Logf("backend change to the reloaded server: %v", time.Since(changed).Round(time.Millisecond))
		if got := lines(seen)[i+1]; got != next {
			t.Errorf("after SIGHUP the server read %q, want %q", got, next)
		}
	}
	d.waitLog(t, "on-change: signal sent", "the signal is logged")
	if strings.Contains(d.Stderr(), "cert-2") {
		t.Error("the log holds a secret value")
	}
}

// A command's environment is minimal and names what changed, never a
// value; several secrets rotated together are one run; a failing command
// is logged and counted and runs again on the next change; a hanging one
// is killed at its timeout, with its process group; nothing runs at start
// unless asked to.
func TestOnChangeCommands(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"rot/a": "a1", "rot/b": "b1", "rot/c": "c1", "fail/k": "f1"})
	work := t.TempDir()
	runs, envOut, failLog, hangLog, startLog := filepath.Join(work, "runs"), filepath.Join(work, "env"), filepath.Join(work, "fail"), filepath.Join(work, "hang"), filepath.Join(work, "start")
	dir := t.TempDir()
	record := writeScript(t, `echo "$SECRETFS_CHANGED" >> "$1"
env > "$2"
cat "$3" >> "$1.values"
`)
	failing := writeScript(t, `echo "$SECRETFS_CHANGED" >> "$1"
echo "no reload today: the first line of stderr" >&2
exit 3
`)
	hanging := writeScript(t, `echo "$$" >> "$1"
sleep 60 &
echo "$!" >> "$1"
sleep 60
`)
	conf := filepath.Join(t.TempDir(), "secretfs.yaml")
	os.WriteFile(conf, []byte(`on-change:
  - name: rotation
    secrets: ["test:rot/*"]
    command: [`+record+`, `+runs+`, `+envOut+`, `+filepath.Join(dir, "test", "rot", "b")+`]
  - name: failing
    secrets: [test:fail/k]
    command: [`+failing+`, `+failLog+`]
  - name: hanging
    secrets: [test:hung/x]
    command: [`+hanging+`, `+hangLog+`]
    timeout: 1s
  - name: at-start
    secrets: [test:rot/a]
    command: [/bin/sh, -c, 'echo "$SECRETFS_REASON $SECRETFS_CHANGED" >> `+startLog+`']
    run-at-start: true
`), 0o600)
	b.write("hung/x", "s1")
	d := mountAt(t, dir, []string{"SFS_ONCHANGE_MARKER=daemon-only"}, "--providers", "test", "--test-dir", b.Dir, "--ttl", "500ms",
		"--config", conf, "--metrics-addr", "127.0.0.1:0")
	base := "http://" + metricsAddr(t, d)
	d.waitLog(t, "on-change: watching", "the runner has read what it watches")

	eventually(t, 10*time.Second, "the run-at-start entry runs once", func() bool { return len(lines(startLog)) == 1 })
	if got := lines(startLog)[0]; got != "start test:rot/a" {
		t.Errorf("run at start: %q, want its reason and what it watches", got)
	}
	time.Sleep(1500 * time.Millisecond) // past a debounce: nothing else ran at start
	if got := lines(runs); len(got) != 0 {
		t.Fatalf("runs before any change: %q", got)
	}

	// One rotation of three secrets: one run naming all three.
	changed := time.Now()
	b.write("rot/a", "a2")
	b.write("rot/b", "b2")
	b.write("rot/c", "c2")
	eventually(t, 10*time.Second, "the rotation runs the command", func() bool { return len(lines(runs)) > 0 })
	t.Logf("backend change to the command's run: %v (debounce 1s)", time.Since(changed).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // any second run would have come by now
	if got := lines(runs); len(got) != 1 || got[0] != "test:rot/a test:rot/b test:rot/c" {
		t.Errorf("runs for a rotation of three secrets: %q, want one run naming all three", got)
	}
	if got := lines(runs + ".values"); len(got) != 1 || got[0] != "b2" {
		t.Errorf("the command read %q through the mount, want the new value b2", got)
	}
	env := strings.Join(lines(envOut), "\n")
	for _, want := range []string{"SECRETFS_CHANGED=test:rot/a test:rot/b test:rot/c", "PATH=", "HOME="} {
		if !strings.Contains(env, want) {
			t.Errorf("the command's environment lacks %s:\n%s", want, env)
		}
	}
	for _, leak := range []string{"SFS_ONCHANGE_MARKER", "a2", "b2", "c2"} {
		if strings.Contains(env, leak) {
			t.Errorf("the command's environment holds %q:\n%s", leak, env)
		}
	}
	eventually(t, 5*time.Second, "the run-at-start entry runs again: rot/a changed", func() bool { return len(lines(startLog)) == 2 })
	if got := lines(startLog)[1]; got != "change test:rot/a" {
		t.Errorf("the run-at-start entry's run on a change: %q, want \"change test:rot/a\"", got)
	}

	// A failing command: logged (its first line of stderr), counted, and
	// run again on the next change.
	for i, next := range []string{"f2", "f3"} {
		b.write("fail/k", next)
		eventually(t, 10*time.Second, "the failing command runs", func() bool { return len(lines(failLog)) == i+1 })
	}
	d.waitLog(t, "no reload today: the first line of stderr", "the command's first line of stderr is logged")
	eventually(t, 5*time.Second, "failures are counted", func() bool {
		_, body := httpGet(t, base+"/metrics")
		return metricValue(body, `secretfs_on_change_runs_total{result="failed"}`) == 2 && metricValue(body, `secretfs_on_change_runs_total{result="ok"}`) >= 2
	})

	// A hanging command is killed at its timeout, grandchildren too, and
	// the next change runs it again.
	b.write("hung/x", "s2")
	eventually(t, 15*time.Second, "the hanging command times out", func() bool {
		_, body := httpGet(t, base+"/metrics")
		return metricValue(body, `secretfs_on_change_runs_total{result="timeout"}`) == 1
	})
	pids := lines(hangLog)
	if len(pids) != 2 {
		t.Fatalf("the hanging command wrote %q, want its pid and its child's", pids)
	}
	for _, pid := range pids {
		if waitFor(5*time.Second, func() bool { _, err := os.Stat("/proc/" + pid); return err != nil }) == false {
			t.Errorf("process %s of a timed-out command is still running", pid)
		}
	}
	b.write("hung/x", "s3")
	eventually(t, 15*time.Second, "the hanging command runs again", func() bool { return len(lines(hangLog)) == 4 })

	if strings.Contains(d.Stderr(), "b2") || strings.Contains(d.Stderr(), "f2") {
		t.Error("the log holds a secret value")
	}
}

// --on-change REF=COMMAND is a one-off, run by /bin/sh -c; bad ones are
// refused with a clear error.
func TestOnChangeFlag(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"app/key": "k1"})
	out := filepath.Join(t.TempDir(), "out")
	d := testMount(t, b, "--ttl", "500ms", "--on-change", "test/app/key=echo \"changed: $SECRETFS_CHANGED\" >> "+out)
	d.waitLog(t, "on-change: watching", "the runner has read what it watches")
	b.write("app/key", "k2")
	eventually(t, 10*time.Second, "the one-off runs", func() bool { return len(lines(out)) == 1 })
	if got := lines(out)[0]; got != "changed: test:app/key" {
		t.Errorf("the one-off wrote %q", got)
	}
	d.waitLog(t, "on-change: command ran", "the run is logged")
	for _, bad := range []struct{ arg, want string }{
		{"test:app/key", "want REF=COMMAND"},
		{"=true", "want REF=COMMAND"},
		{"test:app/key=", "want REF=COMMAND"},
		{"templates/nope=true", `no template "nope"`},
		{"test:app/[=true", "syntax error in pattern"},
	} {
		_, stderr, code := secretfs(t, nil, "mount", "--providers", "test", "--test-dir", b.Dir, "--on-change", bad.arg, t.TempDir())
		if code != 2 || !strings.Contains(stderr, bad.want) {
			t.Errorf("--on-change %q: exit %d, %q; want 2 and %q", bad.arg, code, stderr, bad.want)
		}
	}
}

// startServer starts a program that runs until the test ends.
func startServer(t *testing.T, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// As root, a command runs as the user: it names, and a command others
// could change is refused at start.
func TestOnChangeUserAndTrust(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("runs commands as another user: needs root")
	}
	b := newTestBackend(t, map[string]string{"k": "v1"})
	outDir, err := os.MkdirTemp("", "onchange-user-") // nobody must reach it: not below t.TempDir's 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(outDir) })
	os.Chmod(outDir, 0o777)
	out := filepath.Join(outDir, "id")
	conf := filepath.Join(t.TempDir(), "secretfs.yaml")
	os.WriteFile(conf, []byte(`on-change:
  - secrets: [test:k]
    command: [/bin/sh, -c, 'id -u > `+out+`']
    user: "65534:65534"
`), 0o600)
	d := testMount(t, b, "--ttl", "500ms", "--config", conf)
	d.waitLog(t, "on-change: watching", "the runner has read what it watches")
	b.write("k", "v2")
	if !waitFor(10*time.Second, func() bool { return len(lines(out)) == 1 }) {
		t.Fatalf("the command did not run as nobody:\n%s", d.Stderr())
	}
	if got := lines(out)[0]; got != "65534" {
		t.Errorf("the command ran as uid %s, want 65534", got)
	}

	// A program in a directory anyone may write is refused.
	open := t.TempDir()
	os.Chmod(open, 0o777)
	prog := filepath.Join(open, "reload.sh")
	os.WriteFile(prog, []byte("#!/bin/sh\ntrue\n"), 0o755)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("on-change:\n  - secrets: [test:k]\n    command: ["+prog+"]\n"), 0o600)
	_, stderr, code := secretfs(t, nil, "mount", "--providers", "test", "--test-dir", b.Dir, "--config", bad, t.TempDir())
	if code != 2 || !strings.Contains(stderr, "writable by group or others") {
		t.Errorf("a command others could replace: exit %d, %q; want 2 and refused", code, stderr)
	}
}
