package integration

// The engine under partial failure, through real mounts: one key failing
// alone, floods of missing names, reads and listings during an outage the
// engine knows of, refreshes on request during one.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fileProvider is an exec provider that serves the files of $SFS_DIR: it
// exits 1 for KEY while KEY.fail exists (one key failing alone, a
// misconfigured role say), and for everything while .down exists.
const fileProvider = `#!/bin/sh
[ -e "$SFS_DIR/.down" ] && exit 1
case "$1" in
get)
  [ -e "$SFS_DIR/$2.fail" ] && exit 1
  [ -f "$SFS_DIR/$2" ] || exit 3
  cat "$SFS_DIR/$2" ;;
list)
  [ -z "$2" ] && { ls "$SFS_DIR" | grep -v '\.fail$'; exit 0; }
  exit 0 ;;
*) exit 2 ;;
esac
`

// execFileMount mounts the exec provider "x" over the files of a new
// directory, which it returns.
func execFileMount(t *testing.T, files map[string]string, args ...string) (*daemon, string) {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o700)
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(data, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(dir, "provider.sh")
	if err := os.WriteFile(script, []byte(fileProvider), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "secretfs.yaml")
	os.WriteFile(conf, []byte("exec-providers:\n  - name: x\n    command: ["+script+"]\n    env: [SFS_DIR]\n"), 0o600)
	d := mount(t, []string{"SFS_DIR=" + data}, append([]string{"--config", conf, "--env-allow", "NONE"}, args...)...)
	return d, data
}

// Failure 1: a program that exits 1 for one key took its whole provider
// down; a healthy key served its old value 8 s after it changed.
func TestOneFailingKeyKeepsItsProviderUp(t *testing.T) {
	t.Parallel()
	d, data := execFileMount(t, map[string]string{"good": "good-1", "bad": "bad-1", "other": "other-1"},
		"--ttl", "1s", "--max-stale", "1h", "--timeout", "2s")
	for _, k := range []string{"good", "bad", "other"} {
		if _, err := os.ReadFile(d.Path("x", k)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(data, "bad.fail"), nil, 0o600)
	time.Sleep(1200 * time.Millisecond) // past the TTL
	if got, err := os.ReadFile(d.Path("x", "bad")); err != nil || string(got) != "bad-1" {
		t.Fatalf("the failing key = %q, %v; want its last value", got, err)
	}
	os.WriteFile(filepath.Join(data, "good"), []byte("good-2"), 0o600)
	start := time.Now()
	eventually(t, 5*time.Second, "the healthy key's new value is read", func() bool {
		got, err := os.ReadFile(d.Path("x", "good"))
		return err == nil && string(got) == "good-2"
	})
	if el := time.Since(start); el > 2500*time.Millisecond {
		t.Errorf("the healthy key's change showed after %v, want within about its TTL (1s)", el)
	}
	out, _, _ := secretfs(t, nil, "status", d.Dir)
	if !strings.Contains(out, "provider x: up") {
		t.Errorf("status with one failing key:\n%s\nwant provider x up", out)
	}
	// The failing key comes back on its own.
	os.Remove(filepath.Join(data, "bad.fail"))
	os.WriteFile(filepath.Join(data, "bad"), []byte("bad-2"), 0o600)
	eventually(t, 10*time.Second, "the failing key recovers", func() bool {
		got, err := os.ReadFile(d.Path("x", "bad"))
		return err == nil && string(got) == "bad-2"
	})
}

// rss returns the daemon's resident set size in bytes.
func rss(t *testing.T, d *daemon) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		log := d.Stderr()
		t.Fatalf("%v: the daemon is gone; its log ends:\n%s", err, log[max(0, len(log)-4000):])
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// statMissing stats PROVIDER/nopeN/x for N in [from, to), four at a time.
func statMissing(t *testing.T, d *daemon, provider string, from, to int) {
	t.Helper()
	var wg sync.WaitGroup
	const workers = 4
	for w := range workers {
		wg.Go(func() {
			for i := from + w; i < to; i += workers {
				if _, err := os.Stat(d.Path(provider, fmt.Sprint("nope", i), "x")); !os.IsNotExist(err) {
					t.Errorf("nope%d: %v, want ENOENT", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// Failure 2: 500,000 stats of missing names grew the daemon by 420 bytes
// each, without bound. Not parallel: it keeps both cores busy for a minute,
// and runs alone before the parallel tests.
func TestFloodOfMissingNamesBoundsMemory(t *testing.T) {
	d := mount(t, nil, "--log-level", "info", "--env-allow", "SFS_FLOOD_*")
	statMissing(t, d, "env", 0, 100_000)
	after100k := rss(t, d)
	statMissing(t, d, "env", 100_000, 500_000)
	after500k := rss(t, d)
	t.Logf("daemon RSS: %.1f MB after 100k missing names, %.1f MB after 500k", float64(after100k)/1e6, float64(after500k)/1e6)
	if grew := after500k - after100k; grew > 24<<20 {
		t.Errorf("RSS grew %.1f MB over 400,000 more missing names, want at most 24 MB", float64(grew)/1e6)
	}
}

// Failure 2: with an exec provider the empty listing below each missing
// name took a value's place; the value was then not served in an outage.
func TestMissingNamesBelowAnExecProviderEvictNoValue(t *testing.T) {
	t.Parallel()
	files := map[string]string{}
	for i := range 20 {
		files[fmt.Sprintf("k%02d", i)] = fmt.Sprint("value-", i)
	}
	d, data := execFileMount(t, files, "--max-entries", "20", "--ttl", "1s", "--max-stale", "1h")
	for k, v := range files {
		if got, err := os.ReadFile(d.Path("x", k)); err != nil || string(got) != v {
			t.Fatalf("%s: %q, %v", k, got, err)
		}
	}
	statMissing(t, d, "x", 0, 30)
	os.WriteFile(filepath.Join(data, ".down"), nil, 0o600)
	time.Sleep(1200 * time.Millisecond)
	for k, v := range files {
		if got, err := os.ReadFile(d.Path("x", k)); err != nil || string(got) != v {
			t.Errorf("%s in an outage after 30 missing names: %q, %v; want the stale value", k, got, err)
		}
	}
}

// downKnown waits until the daemon reports provider down.
func downKnown(t *testing.T, d *daemon, provider string) {
	t.Helper()
	eventually(t, 15*time.Second, provider+" is known to be down", func() bool {
		out, _, _ := secretfs(t, nil, "status", d.Dir)
		return strings.Contains(out, "provider "+provider+": down")
	})
}

// Failure 3: an uncached read during a known outage still waited
// --timeout; ls -l of six uncached names took 4.2 s with --timeout 2s.
func TestUncachedReadsDuringKnownOutageFailAtOnce(t *testing.T) {
	t.Parallel()
	files := map[string]string{"w1": "w1", "w2": "w2"}
	for i := range 6 {
		files[fmt.Sprint("six/n", i)] = "n"
	}
	b := newTestBackend(t, files)
	d := testMount(t, b, "--ttl", "500ms", "--max-stale", "1h", "--timeout", "2s")
	for _, k := range []string{"w1", "w2"} {
		if _, err := os.ReadFile(d.Path("test", k)); err != nil {
			t.Fatal(err)
		}
	}
	readDir(t, d.Path("test", "six")) // the listing is cached; the values are not
	// The backend hangs: every call takes its whole budget.
	hang := filepath.Join(b.Dir, ".hang")
	os.WriteFile(hang, nil, 0o600)
	defer os.Remove(hang)
	time.Sleep(700 * time.Millisecond) // past the TTL
	if got, err := os.ReadFile(d.Path("test", "w1")); err != nil || string(got) != "w1" {
		t.Fatalf("cached read in the outage: %q, %v", got, err)
	}
	downKnown(t, d, "test")

	start := time.Now()
	_, err := os.ReadFile(d.Path("test", "six", "n0"))
	el := time.Since(start)
	t.Logf("an uncached read during a known outage: %v", el)
	if el > 100*time.Millisecond {
		t.Errorf("an uncached read during a known outage took %v, want within 100ms", el)
	}
	wantErrno(t, "uncached read in a known outage", err, syscall.EIO)
	start = time.Now()
	names := readDir(t, d.Path("test", "six"))
	for _, n := range names {
		os.Lstat(d.Path("test", "six", n))
	}
	if el := time.Since(start); el > 500*time.Millisecond || len(names) != 6 {
		t.Errorf("ls -l of %d uncached names during a known outage took %v, want 6 names within 0.5s", len(names), el)
	}
}

// Failure 4: a refresh on request during an outage dropped the good value;
// the next read was EIO.
func TestRefreshDuringOutageKeepsTheValue(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "one", "dir/a": "a1"})
	d := testMount(t, b, "--ttl", "1h", "--max-stale", "1h")
	for _, k := range []string{"k", "dir/a"} {
		if _, err := os.ReadFile(d.Path("test", k)); err != nil {
			t.Fatal(err)
		}
	}
	b.setDown(true)
	_, stderr, code := secretfs(t, nil, "refresh", d.Dir, "test:k")
	if code == 0 || !strings.Contains(stderr, "last good value is kept") {
		t.Errorf("refresh in an outage: exit %d, %q; want a failure that says the value is kept", code, stderr)
	}
	if _, stderr, code := secretfs(t, nil, "refresh", d.Dir, "test:dir/"); code != 0 {
		t.Errorf("refresh of a directory in an outage: exit %d, %s", code, stderr)
	}
	for k, want := range map[string]string{"k": "one", "dir/a": "a1"} {
		if got, err := os.ReadFile(d.Path("test", k)); err != nil || string(got) != want {
			t.Errorf("%s after a refresh in an outage = %q, %v; want the last good value", k, got, err)
		}
	}
	b.setDown(false)
	b.write("k", "two")
	if _, stderr, code := secretfs(t, nil, "refresh", d.Dir, "test:k"); code != 0 {
		t.Fatalf("refresh once the backend is back: exit %d, %s", code, stderr)
	}
	if got, err := os.ReadFile(d.Path("test", "k")); err != nil || string(got) != "two" {
		t.Errorf("after the refresh = %q, %v; want two", got, err)
	}
}

// Failure 5: readdir waited a full --timeout on a provider known to be
// down (its read-ahead of the values ignored health).
func TestReaddirDuringKnownOutageIsServedAtOnce(t *testing.T) {
	t.Parallel()
	secrets := map[string]string{}
	for i := range 6 {
		secrets[fmt.Sprint("pf/s", i)] = "v"
	}
	k := kumoWith(t, secrets)
	d := awsMount(t, k, "--ttl", "500ms", "--max-stale", "1h", "--timeout", "1s")
	for _, n := range []string{"s0", "s1"} {
		if _, err := os.ReadFile(d.Path("aws", "pf", n)); err != nil {
			t.Fatal(err)
		}
	}
	readDir(t, d.Path("aws", "pf"))
	// The backend hangs: every call takes its whole budget.
	k.cmd.Process.Signal(syscall.SIGSTOP)
	defer k.cmd.Process.Signal(syscall.SIGCONT)
	time.Sleep(700 * time.Millisecond)
	if got, err := os.ReadFile(d.Path("aws", "pf", "s0")); err != nil || string(got) != "v" {
		t.Fatalf("cached read in the outage: %q, %v", got, err)
	}
	downKnown(t, d, "aws")
	start := time.Now()
	names := readDir(t, d.Path("aws", "pf"))
	if el := time.Since(start); el > 500*time.Millisecond || len(names) != 6 {
		t.Errorf("ls during a known outage took %v and showed %q; want the 6 names within 0.5s", el, names)
	}
}
