package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testBackend makes a directory for the test provider and writes files.
type testBackend struct {
	t   *testing.T
	Dir string
}

func newTestBackend(t *testing.T, files map[string]string) *testBackend {
	b := &testBackend{t: t, Dir: t.TempDir()}
	for k, v := range files {
		b.write(k, v)
	}
	return b
}

func (b *testBackend) write(key, value string) {
	b.t.Helper()
	p := filepath.Join(b.Dir, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		b.t.Fatal(err)
	}
	// Write a new file and rename it, as a real rotation is atomic.
	tmp := p + ".tmp~"
	if err := os.WriteFile(tmp, []byte(value), 0o600); err != nil {
		b.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		b.t.Fatal(err)
	}
}

// setDown takes the backend down (every call fails as unavailable) or up.
func (b *testBackend) setDown(down bool) {
	b.t.Helper()
	p := filepath.Join(b.Dir, ".down")
	if down {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			b.t.Fatal(err)
		}
	} else {
		os.Remove(p)
	}
}

func testMount(t *testing.T, b *testBackend, args ...string) *daemon {
	return mount(t, nil, append([]string{"--providers", "env,test", "--test-dir", b.Dir, "--env-allow", "NONE"}, args...)...)
}

func TestRotationAfterTTL(t *testing.T) {
	b := newTestBackend(t, map[string]string{"app/token": "old-value"})
	d := testMount(t, b, "--ttl", "300ms")
	p := d.Path("test", "app", "token")
	if got, err := os.ReadFile(p); err != nil || string(got) != "old-value" {
		t.Fatalf("first read = %q, %v", got, err)
	}
	for _, next := range []string{"a much longer new value than before", "short"} {
		b.write("app/token", next)
		eventually(t, 10*time.Second, "the new value is read", func() bool {
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("read during rotation: %v", err)
			}
			if string(got) != next && !slices.Contains([]string{"old-value", "a much longer new value than before"}, string(got)) {
				t.Fatalf("read %q during rotation: neither old nor new (a truncated or mixed read)", got)
			}
			return string(got) == next
		})
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil || st.Size != int64(len(next)) {
			t.Errorf("st_size after rotation = %d, %v; want %d", st.Size, err, len(next))
		}
	}
}

func TestHangingBackendGivesEIOWithinTimeout(t *testing.T) {
	b := newTestBackend(t, map[string]string{"ok": "fine", "hang/forever": "never served"})
	d := testMount(t, b, "--timeout", "1s")
	start := time.Now()
	_, err := os.ReadFile(d.Path("test", "hang", "forever"))
	elapsed := time.Since(start)
	wantErrno(t, "read of a hanging key", err, syscall.EIO)
	if elapsed > 4*time.Second { // a hang detector, not a benchmark: 1s timeout for the whole lookup
		t.Errorf("read returned after %v with a 1s --timeout", elapsed)
	}
	if got, err := os.ReadFile(d.Path("test", "ok")); err != nil || string(got) != "fine" {
		t.Errorf("after the hang, another key: %q, %v", got, err)
	}
	d.waitLog(t, "backend unavailable", "the timeout was not logged")
}

func TestStaleWhileBackendDown(t *testing.T) {
	b := newTestBackend(t, map[string]string{"db/pass": "cached-value", "other": "x"})
	d := testMount(t, b, "--ttl", "200ms", "--max-stale", "1h", "--timeout", "2s")
	p := d.Path("test", "db", "pass")
	if got, err := os.ReadFile(p); err != nil || string(got) != "cached-value" {
		t.Fatalf("warm-up read = %q, %v", got, err)
	}
	b.setDown(true)
	time.Sleep(400 * time.Millisecond) // past the TTL (a real wait, not a timed assertion)
	for range 3 {
		if got, err := os.ReadFile(p); err != nil || string(got) != "cached-value" {
			t.Fatalf("read while down = %q, %v; want the stale value", got, err)
		}
	}
	_, err := os.ReadFile(d.Path("test", "never-read"))
	wantErrno(t, "uncached key while down", err, syscall.EIO)
	d.waitLog(t, "serving the last good value", "stale serving was not logged")
	b.write("db/pass", "recovered-value")
	b.setDown(false)
	eventually(t, 15*time.Second, "reads recover", func() bool {
		got, err := os.ReadFile(p)
		return err == nil && string(got) == "recovered-value"
	})
}

func TestMaxStaleZeroNeverServesStale(t *testing.T) {
	b := newTestBackend(t, map[string]string{"k": "v"})
	d := testMount(t, b, "--ttl", "100ms", "--max-stale", "0", "--timeout", "2s")
	if _, err := os.ReadFile(d.Path("test", "k")); err != nil {
		t.Fatal(err)
	}
	b.setDown(true)
	time.Sleep(300 * time.Millisecond)
	_, err := os.ReadFile(d.Path("test", "k"))
	wantErrno(t, "expired key with --max-stale 0", err, syscall.EIO)
}

func TestDirectoriesAndCollisions(t *testing.T) {
	b := newTestBackend(t, map[string]string{
		"top":             "t",
		"app/db/password": "pw",
		"app/db/user":     "u",
		"app/api":         "a",
		"team@x/key":      "at",
	})
	// "app" is also a secret itself.
	if err := os.WriteFile(filepath.Join(b.Dir, "app.secret"), []byte("app-itself"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testMount(t, b)
	tests := []struct {
		dir  string
		want []string
	}{
		{"test", []string{"app", "app@", "team@x", "top"}},
		{"test/app", []string{"api", "db"}},
		{"test/app/db", []string{"password", "user"}},
		{"test/team@x", []string{"key"}},
	}
	for _, tt := range tests {
		if got := readDir(t, d.Path(tt.dir)); !slices.Equal(got, tt.want) {
			t.Errorf("ls %s = %q, want %q", tt.dir, got, tt.want)
		}
	}
	reads := map[string]string{
		"test/app@":            "app-itself",
		"test/app/db/password": "pw",
		"test/app/api":         "a",
		"test/team@x/key":      "at",
		"test/top":             "t",
	}
	for p, want := range reads {
		if got, err := os.ReadFile(d.Path(p)); err != nil || string(got) != want {
			t.Errorf("cat %s = %q, %v; want %q", p, got, err, want)
		}
	}
	st, err := os.Stat(d.Path("test", "app"))
	if err != nil || !st.IsDir() {
		t.Errorf("test/app: %v, %v; want a directory (the directory wins)", st, err)
	}
	_, err = os.ReadFile(d.Path("test", "app", "nope"))
	wantErrno(t, "missing key in a listed directory", err, syscall.ENOENT)
}

func TestSIGTERMUnmounts(t *testing.T) {
	b := newTestBackend(t, map[string]string{"k": "v"})
	dir := t.TempDir()
	d := startDaemon(t, dir, nil, "--providers", "test", "--test-dir", b.Dir)
	if err := d.terminate(); err != nil {
		t.Errorf("exit after SIGTERM: %v, want 0", err)
	}
	if isMounted(dir) {
		t.Error("mount left behind after SIGTERM")
	}
}

func TestSIGTERMWhileAFileIsHeldOpen(t *testing.T) {
	t.Parallel()
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	b := newTestBackend(t, map[string]string{"k": "held-value", "other": "o"})
	dir := t.TempDir()
	d := startDaemon(t, dir, nil, "--providers", "test", "--test-dir", b.Dir, "--audit-log", audit)
	t.Cleanup(func() { d.kill() })
	f, err := os.Open(filepath.Join(dir, "test", "k")) // keeps the mount busy
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d.cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 5*time.Second, "the mount leaves the namespace (a lazy unmount)", func() bool { return !isMounted(dir) })
	time.Sleep(2500 * time.Millisecond) // longer than the old 2s cut-off
	select {
	case <-d.exited:
		t.Fatalf("the daemon exited while a file was open: %v", d.err)
	default:
	}
	buf := make([]byte, 64)
	n, err := f.ReadAt(buf, 0)
	if string(buf[:n]) != "held-value" {
		t.Errorf("the held descriptor after SIGTERM read %q, %v; want the value", buf[:n], err)
	}
	f.Close()
	select {
	case <-d.exited:
		if d.err != nil {
			t.Errorf("exit after the last file closed: %v, want 0", d.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not exit after the last file was closed")
	}
	if data, _ := os.ReadFile(audit); !strings.Contains(string(data), `"ref":"test:k"`) {
		t.Errorf("audit records were not written until exit: %s", data)
	}
}

func TestShutdownGraceEnds(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v"})
	dir := t.TempDir()
	d := startDaemon(t, dir, nil, "--providers", "test", "--test-dir", b.Dir, "--shutdown-grace", "500ms")
	f, err := os.Open(filepath.Join(dir, "test", "k"))
	if err != nil {
		d.kill()
		t.Fatal(err)
	}
	defer f.Close()
	if err := d.terminate(); err != nil {
		t.Errorf("exit after SIGTERM and the grace: %v, want 0", err)
	}
	d.waitLog(t, "shutdown grace", "the end of the grace was not logged")
}

func TestStaleMountpointIsCleanedUp(t *testing.T) {
	b := newTestBackend(t, map[string]string{"k": "v"})
	dir := t.TempDir()
	first := startDaemon(t, dir, nil, "--providers", "test", "--test-dir", b.Dir)
	first.kill()
	if _, err := os.Stat(dir); !strings.Contains(errString(err), "transport endpoint is not connected") {
		t.Fatalf("after SIGKILL: stat = %v, want ENOTCONN (a dead mount)", err)
	}
	d := mountAt(t, dir, nil, "--providers", "test", "--test-dir", b.Dir)
	if got, err := os.ReadFile(d.Path("test", "k")); err != nil || string(got) != "v" {
		t.Errorf("read after remount = %q, %v", got, err)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestGetAndLsCommands(t *testing.T) {
	b := newTestBackend(t, map[string]string{"app/db/password": "pw", "app/api": "a", "json": `{"k":"v"}`})
	common := []string{"--providers", "test", "--test-dir", b.Dir}
	tests := []struct {
		args     []string
		want     string
		wantCode int
	}{
		{[]string{"get", "test:app/db/password"}, "pw", 0},
		{[]string{"get", "test:json#k"}, "v", 0},
		{[]string{"get", "test:missing"}, "", 3},
		{[]string{"get", "test:json#missing"}, "", 3},
		{[]string{"get", "test:"}, "", 4},
		{[]string{"get", "nope:x"}, "", 2}, // a provider the binary lacks: a usage error naming those it has
		{[]string{"get", "--timeout", "500ms", "test:hang/x"}, "", 6},
		{[]string{"ls", "test:"}, "app/\njson\n", 0},
		{[]string{"ls", "test:app"}, "api\ndb/\n", 0},
		{[]string{"ls", "test:app/"}, "api\ndb/\n", 0},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{tt.args[0]}, append(common, tt.args[1:]...)...)
			out, stderr, code := secretfs(t, nil, args...)
			if code != tt.wantCode || out != tt.want {
				t.Errorf("stdout %q, exit %d; want %q, %d (stderr %q)", out, code, tt.want, tt.wantCode, stderr)
			}
			if code != 0 && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("stderr is not one line: %q", stderr)
			}
		})
	}
	b.setDown(true)
	if _, _, code := secretfs(t, nil, append([]string{"get"}, append(common, "test:app/api")...)...); code != 6 {
		t.Errorf("get with the backend down: exit %d, want 6", code)
	}
}
