package integration

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// execEnv runs `secretfs exec ARGS -- env` and returns its environment.
func execEnv(t *testing.T, env []string, args ...string) (map[string]string, string, int) {
	t.Helper()
	stdout, stderr, code := secretfs(t, env, append(append([]string{"exec"}, args...), "--", "env")...)
	vars := map[string]string{}
	for l := range strings.Lines(stdout) {
		if k, v, ok := strings.Cut(strings.TrimSuffix(l, "\n"), "="); ok {
			vars[k] = v
		}
	}
	return vars, stderr, code
}

// The environment: --env and --env-from (names upper-cased, / and - as
// _), the caller's variables (or PATH alone with --clean-env), a name
// already set refused unless --override, collisions and bad names
// refused, and a secret that cannot be read an error before the command
// runs. No value reaches stderr.
func TestExecEnvironment(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"db/pass": "pw-1", "app/api-key": "key-1", "app/sub/region": "eu-1"})
	base := []string{"--providers", "test", "--test-dir", b.Dir}
	caller := []string{"SFS_EXEC_MARKER=from-the-caller", "SFS_TAKEN=old"}

	vars, stderr, code := execEnv(t, caller, append(base, "--env", "DB_PASSWORD=test:db/pass", "--env-from", "test:app/")...)
	if code != 0 {
		t.Fatalf("exec: exit %d, %s", code, stderr)
	}
	for k, want := range map[string]string{"DB_PASSWORD": "pw-1", "API_KEY": "key-1", "SUB_REGION": "eu-1", "SFS_EXEC_MARKER": "from-the-caller"} {
		if got := vars[k]; got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}

	vars, _, code = execEnv(t, caller, append(base, "--clean-env", "--env", "DB_PASSWORD=test:db/pass")...)
	if _, ok := vars["SFS_EXEC_MARKER"]; ok || code != 0 || vars["PATH"] == "" || vars["DB_PASSWORD"] != "pw-1" {
		t.Errorf("--clean-env: exit %d, environment %v; want PATH and the secret only", code, vars)
	}

	_, stderr, code = execEnv(t, caller, append(base, "--env", "SFS_TAKEN=test:db/pass")...)
	if code != 2 || !strings.Contains(stderr, "SFS_TAKEN is already set") {
		t.Errorf("a name already set: exit %d, %q; want 2 and why", code, stderr)
	}
	vars, _, code = execEnv(t, caller, append(base, "--override", "--env", "SFS_TAKEN=test:db/pass")...)
	if code != 0 || vars["SFS_TAKEN"] != "pw-1" {
		t.Errorf("--override: exit %d, SFS_TAKEN=%q; want the secret", code, vars["SFS_TAKEN"])
	}

	// A mount's config file serves: its mount-only settings are passed over.
	conf := filepath.Join(t.TempDir(), "secretfs.yaml")
	os.WriteFile(conf, []byte("ttl: 1m\nuid: 0\naudit-log: /dev/null\nfile-mode: \"0440\"\n"), 0o600)
	vars, stderr, code = execEnv(t, nil, append(base, "--config", conf, "--env", "DB_PASSWORD=test:db/pass")...)
	if code != 0 || vars["DB_PASSWORD"] != "pw-1" {
		t.Errorf("exec with a mount's config file: exit %d, %q", code, stderr)
	}

	b.write("clash/a-b", "1")
	b.write("clash/a_b", "2")
	b.write("bad/9lives", "3")
	b.write("loader/ld_preload", "/tmp/evil.so")
	b.write("nul", "a\x00b")
	ran := filepath.Join(t.TempDir(), "ran")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--env-from", "test:clash/"}, 2, "A_B is given twice"},
		{[]string{"--env", "API_KEY=test:db/pass", "--env-from", "test:app/"}, 2, "API_KEY is given twice"},
		{[]string{"--env-from", "test:bad/"}, 2, "cannot be an environment variable's name"},
		{[]string{"--env-from", "test:loader/"}, 2, "LD_PRELOAD (from ld_preload) would change how programs run"},
		{[]string{"--env", "X=test:nul"}, 1, "X holds a NUL byte"},
		{[]string{"--env", "1X=test:db/pass"}, 2, "want NAME=REF"},
		{[]string{"--env", "X=test:db/missing"}, 3, "test:db/missing"},
		{[]string{"--env-from", "test:nowhere/"}, 3, "test:nowhere/"},
		{[]string{"--env", "X=nocolon"}, 4, "nocolon"},
	} {
		args := append(append(append([]string{"exec"}, base...), tc.args...), "--", "touch", ran)
		_, stderr, code := secretfs(t, nil, args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("exec %q: exit %d, %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
		if _, err := os.Stat(ran); err == nil {
			t.Fatalf("exec %q: the command ran despite the error", tc.args)
		}
		for _, v := range []string{"pw-1", "key-1"} {
			if strings.Contains(stderr, v) {
				t.Errorf("exec %q: stderr holds a value: %q", tc.args, stderr)
			}
		}
	}
}

// The exit status is the command's (128+N for a signal N).
func TestExecExitStatus(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v"})
	for _, tc := range []struct {
		script string
		code   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -KILL $$", 128 + 9},
		{"kill -TERM $$", 128 + 15},
	} {
		_, stderr, code := secretfs(t, nil, "exec", "--providers", "test", "--test-dir", b.Dir, "--env", "K=test:k", "--", "sh", "-c", tc.script)
		if code != tc.code {
			t.Errorf("sh -c %q: exit %d, want %d (%s)", tc.script, code, tc.code, stderr)
		}
		if strings.Contains(stderr, "secretfs:") {
			t.Errorf("sh -c %q: secretfs added to stderr: %q", tc.script, stderr)
		}
	}
	_, stderr, code := secretfs(t, nil, "exec", "--providers", "test", "--test-dir", b.Dir, "--env", "K=test:k", "--", "/nonexistent/program")
	if code != 127 || !strings.Contains(stderr, "/nonexistent/program") {
		t.Errorf("a missing program: exit %d, %q; want 127 (as a shell says) and its name", code, stderr)
	}
}

// startExec starts `secretfs exec ARGS -- sh -c SCRIPT` in the background.
func startExec(t *testing.T, env []string, args []string, script string) (*exec.Cmd, chan error) {
	t.Helper()
	cmd := exec.Command(secretfsBin, append(append([]string{"exec"}, args...), "--", "sh", "-c", script)...)
	cmd.Env = append(os.Environ(), env...)
	var (
		mu     sync.Mutex
		stderr bytes.Buffer // guarded by mu
	)
	cmd.Stderr = lockedWriter{&mu, &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done, exited := make(chan error, 1), make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("secretfs exec stderr:\n%s", stderr.String())
			mu.Unlock()
		}
	})
	return cmd, done
}

// childScript records its pid and $SECRET in out at start, USR1 in out,
// and exits 42 on TERM.
func childScript(out string) string {
	return `trap 'echo usr1 >> ` + out + `' USR1
trap 'echo term >> ` + out + `; exit 42' TERM
echo "$$ $SECRET" >> ` + out + `
while :; do sleep 0.05; done`
}

// Signals sent to secretfs reach the command; it exits with the command's
// status.
func TestExecForwardsSignals(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v1"})
	out := filepath.Join(t.TempDir(), "out")
	cmd, done := startExec(t, nil, []string{"--providers", "test", "--test-dir", b.Dir, "--env", "SECRET=test:k"}, childScript(out))
	eventually(t, 5*time.Second, "the command starts", func() bool { return len(lines(out)) == 1 })
	cmd.Process.Signal(syscall.SIGUSR1)
	eventually(t, 5*time.Second, "SIGUSR1 reaches the command", func() bool { return len(lines(out)) == 2 && lines(out)[1] == "usr1" })
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if code := exitStatus(err); code != 42 {
			t.Errorf("secretfs exec exited %d after the command's exit 42", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SIGTERM did not end the command")
	}
}

// Ctrl-C (or TERM) while the secrets are still being read ends secretfs
// at once, with the status a shell gives a command the signal ends, and
// the command never starts.
func TestExecInterruptedWhileReading(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			// A backend that takes the connection and never answers.
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lis.Close() })
			accepted := make(chan struct{}, 1)
			go func() {
				for {
					c, err := lis.Accept()
					if err != nil {
						return
					}
					t.Cleanup(func() { c.Close() })
					select {
					case accepted <- struct{}{}:
					default:
					}
				}
			}()
			out := filepath.Join(t.TempDir(), "out")
			cmd, done := startExec(t, nil, []string{"--providers", "gcp", "--gcp-project", "p", "--gcp-endpoint", lis.Addr().String(),
				"--gcp-insecure", "--timeout", "30s", "--env", "SECRET=gcp:k"}, "echo started > "+out)
			select {
			case <-accepted: // reading
			case <-time.After(10 * time.Second):
				t.Fatal("secretfs exec never reached the backend")
			}
			time.Sleep(100 * time.Millisecond)
			cmd.Process.Signal(sig)
			select {
			case err := <-done:
				if got, want := exitStatus(err), 128+int(sig); got != want {
					t.Errorf("exit %d, want %d", got, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%v did not end secretfs exec while it read", sig)
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("the command started")
			}
		})
	}
}

// A TERM that comes while a restart waits for the old command to stop ends
// secretfs with it: the new command is never started.
func TestExecTermDuringARestartEndsIt(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v1"})
	out := filepath.Join(t.TempDir(), "out")
	// The command takes two seconds to stop.
	script := `trap 'echo term >> ` + out + `; sleep 2; exit 42' TERM
echo "$$ $SECRET" >> ` + out + `
while :; do sleep 0.05; done`
	cmd, done := startExec(t, nil, []string{"--providers", "test", "--test-dir", b.Dir, "--ttl", "300ms", "--restart-on-change",
		"--stop-timeout", "10s", "--env", "SECRET=test:k"}, script)
	eventually(t, 5*time.Second, "the command starts", func() bool { return len(lines(out)) == 1 })
	b.write("k", "v2")
	eventually(t, 10*time.Second, "the restart asks the command to stop", func() bool { return len(lines(out)) == 2 })
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if got := exitStatus(err); got != 42 {
			t.Errorf("exit %d, want the command's 42", got)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("TERM during a restart did not end secretfs exec")
	}
	time.Sleep(300 * time.Millisecond)
	if got := lines(out); slices.ContainsFunc(got, func(l string) bool { return strings.HasSuffix(l, " v2") }) {
		t.Errorf("the command wrote %q; want no new command started with v2", got)
	}
}

func exitStatus(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// --restart-on-change: a rotation in AWS Secrets Manager (kumo) restarts
// the command with the new value (TERM, then a new process); without the
// flag it keeps running.
func TestExecRestartsOnRotationInKumo(t *testing.T) {
	t.Parallel()
	k := startKumo(t, 0)
	t.Cleanup(k.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := k.Client().CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String("app/db"), SecretString: aws.String(`{"password":"pw-1"}`)}); err != nil {
		t.Fatal(err)
	}
	out, kept := filepath.Join(t.TempDir(), "out"), filepath.Join(t.TempDir(), "kept")
	args := []string{"--providers", "aws", "--ttl", "500ms", "--env", "SECRET=aws:app/db#password"}
	startExec(t, k.Env(t), append([]string{"--restart-on-change"}, args...), childScript(out))
	startExec(t, k.Env(t), args, childScript(kept))
	eventually(t, 10*time.Second, "the commands start", func() bool { return len(lines(out)) == 1 && len(lines(kept)) == 1 })
	first := strings.Fields(lines(out)[0])
	if len(first) != 2 || first[1] != "pw-1" {
		t.Fatalf("the command started with %q, want its pid and pw-1", lines(out)[0])
	}

	changed := time.Now()
	if _, err := k.Client().PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String("app/db"), SecretString: aws.String(`{"password":"pw-2"}`)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the command restarts with the new value", func() bool { return len(lines(out)) == 3 })
	t.Logf("rotation in kumo to the restarted command: %v (TTL 500ms, debounce 1s)", time.Since(changed).Round(time.Millisecond))
	got := lines(out)
	second := strings.Fields(got[2])
	if got[1] != "term" || len(second) != 2 || second[1] != "pw-2" || second[0] == first[0] {
		t.Errorf("after the rotation the command wrote %q; want term, then a new pid with pw-2", got)
	}
	time.Sleep(2 * time.Second)
	if got := lines(kept); len(got) != 1 {
		t.Errorf("without --restart-on-change the command wrote %q; want it left running as it was", got)
	}
}

// A refresh that fails keeps the command running; the next change once
// the backend is back restarts it.
func TestExecKeepsTheCommandWhenARefreshFails(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v1"})
	out := filepath.Join(t.TempDir(), "out")
	startExec(t, nil, []string{"--providers", "test", "--test-dir", b.Dir, "--ttl", "500ms", "--max-stale", "0", "--restart-on-change", "--env", "SECRET=test:k"}, childScript(out))
	eventually(t, 5*time.Second, "the command starts", func() bool { return len(lines(out)) == 1 })
	b.setDown(true)
	time.Sleep(3 * time.Second) // several TTLs of failed refreshes
	if got := lines(out); len(got) != 1 {
		t.Fatalf("while the backend is down the command wrote %q; want it left running", got)
	}
	b.write("k", "v2")
	b.setDown(false)
	eventually(t, 15*time.Second, "the command restarts once the backend is back", func() bool { return len(lines(out)) == 3 })
	if got := lines(out); got[1] != "term" || !strings.HasSuffix(got[2], " v2") {
		t.Errorf("after the outage the command wrote %q; want term, then v2", got)
	}
}

// --env-from with a TTL under the debounce still restarts (its relists do
// not push the restart back), and the command dies with secretfs, even
// killed with SIGKILL.
func TestExecEnvFromRestartsAndDiesWithSecretfs(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"app/secret": "s1"})
	out := filepath.Join(t.TempDir(), "out")
	cmd, done := startExec(t, nil, []string{"--providers", "test", "--test-dir", b.Dir, "--ttl", "500ms", "--restart-on-change", "--env-from", "test:app/"}, childScript(out))
	eventually(t, 5*time.Second, "the command starts", func() bool { return len(lines(out)) == 1 })
	b.write("app/secret", "s2")
	eventually(t, 10*time.Second, "the command restarts with the new value", func() bool { return len(lines(out)) == 3 })
	got := lines(out)
	if !strings.HasSuffix(got[2], " s2") {
		t.Fatalf("after the rotation the command wrote %q", got)
	}
	pid := strings.Fields(got[2])[0]
	cmd.Process.Kill()
	<-done
	if !waitFor(5*time.Second, func() bool { _, err := os.Stat("/proc/" + pid); return err != nil }) {
		t.Errorf("the command (pid %s) outlived secretfs killed with SIGKILL", pid)
	}
}
