package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// inotifyWatch is Debian's inotifywait watching one path, its events one
// per line.
type inotifyWatch struct {
	events chan string
}

// inotifywait watches path with inotifywait -m, and returns once the watch
// is established.
func inotifywait(t *testing.T, path string) *inotifyWatch {
	t.Helper()
	if _, err := exec.LookPath("inotifywait"); err != nil {
		t.Skip("inotifywait (Debian's inotify-tools) is not installed; make inotify-tools installs it")
	}
	// What tells of a change: not OPEN, ACCESS or CLOSE_NOWRITE, which
	// readers cause.
	cmd := exec.Command("inotifywait", "-m", "--format", "%e", "-e", "modify,attrib,close_write,moved_to,moved_from,move_self,create,delete,delete_self", path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Watches established") {
				ready <- nil
				io.Copy(io.Discard, stderr)
				return
			}
		}
		ready <- errors.New("inotifywait ended before its watch was established")
	}()
	w := &inotifyWatch{events: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			w.events <- sc.Text()
		}
		close(w.events)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("inotifywait: no watch within 10s")
	}
	return w
}

// next returns the next event within d, or "".
func (w *inotifyWatch) next(d time.Duration) string {
	select {
	case ev := <-w.events:
		return ev
	case <-time.After(d):
		return ""
	}
}

// File events, as watchers see them (the README's table): a change and a
// deletion of a secret, and a template's new render, reach a watcher of
// the file as IN_DELETE_SELF (the name's old inode is deleted), including
// a watcher that read the file once and has read nothing since, through
// several sweeps; a watcher that adds its watch again sees the next
// change too. A watcher of the directory hears nothing. In fast and in
// audit mode.
func TestFileEvents(t *testing.T) {
	for _, mode := range []string{"fast", "audit"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			b := newTestBackend(t, map[string]string{"app/token": "v1", "app/user": "u1", "app/gone": "g"})
			tmpl := filepath.Join(t.TempDir(), "app.env")
			os.WriteFile(tmpl, []byte(`USER={{ secret "test:app/user" }}`+"\n"), 0o600)
			// The TTL is the bound of the delay: a change is heard within
			// it, plus the time to tell the kernel.
			const ttl = 500 * time.Millisecond
			args := []string{"--ttl", ttl.String(), "--template", "app.env=" + tmpl}
			if mode == "audit" {
				args = append(args, "--audit-log", filepath.Join(t.TempDir(), "audit.jsonl"))
			}
			d := testMount(t, b, args...)
			token, tmplPath := d.Path("test", "app", "token"), d.Path("templates", "app.env")
			for _, p := range []string{token, d.Path("test", "app", "gone"), tmplPath} {
				if _, err := os.ReadFile(p); err != nil {
					t.Fatalf("first read of %s: %v", p, err)
				}
			}
			fileWatch := inotifywait(t, token)
			goneWatch := inotifywait(t, d.Path("test", "app", "gone"))
			tmplWatch := inotifywait(t, tmplPath)
			dirWatch := inotifywait(t, d.Path("test", "app"))

			// Nobody reads: the names are swept (every second at this
			// TTL) and the watched ones kept.
			time.Sleep(3 * time.Second)
			if ev := fileWatch.next(0); ev != "" {
				t.Fatalf("an event %q before any change", ev)
			}

			changed := time.Now()
			b.write("app/token", "v2")
			if ev := fileWatch.next(ttl + 4*time.Second); ev != "DELETE_SELF" {
				t.Fatalf("watcher of a changed file got %q, want DELETE_SELF", ev)
			}
			t.Logf("%s mode: a change reached the file's watcher %v after the backend changed (TTL %v)", mode, time.Since(changed).Round(time.Millisecond), ttl)
			if got, err := os.ReadFile(token); err != nil || string(got) != "v2" {
				t.Errorf("after the event the file reads %q, %v; want v2", got, err)
			}

			os.Remove(filepath.Join(b.Dir, "app", "gone"))
			if ev := goneWatch.next(ttl + 4*time.Second); ev != "DELETE_SELF" {
				t.Errorf("watcher of a deleted secret got %q, want DELETE_SELF", ev)
			}
			if _, err := os.Stat(d.Path("test", "app", "gone")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("stat of a deleted secret after its event: %v, want ENOENT", err)
			}

			b.write("app/user", "u2")
			if ev := tmplWatch.next(ttl + 4*time.Second); ev != "DELETE_SELF" {
				t.Errorf("watcher of a template whose secret changed got %q, want DELETE_SELF", ev)
			}
			if got, err := os.ReadFile(tmplPath); err != nil || string(got) != "USER=u2\n" {
				t.Errorf("the template after its event reads %q, %v; want the new render", got, err)
			}

			if ev := dirWatch.next(time.Second); ev != "" {
				t.Errorf("a watcher of the directory got %q; the README says it hears nothing", ev)
			}
		})
	}
}

// The usual Go watcher: fsnotify on the file, read once, then wait. On
// Remove it adds its watch again (as for the CSI driver's symlink swap),
// reads the new value, and hears the next change too.
func TestFsnotifyWatcherFollowsRotations(t *testing.T) {
	for _, mode := range []string{"fast", "audit"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			args := []string{"--ttl", "500ms"}
			if mode == "audit" {
				args = append(args, "--audit-log", filepath.Join(t.TempDir(), "audit.jsonl"))
			}
			fsnotifyFollows(t, args)
		})
	}
}

func fsnotifyFollows(t *testing.T, args []string) {
	b := newTestBackend(t, map[string]string{"db/password": "p0"})
	d := testMount(t, b, args...)
	p := d.Path("test", "db", "password")
	if got, err := os.ReadFile(p); err != nil || string(got) != "p0" {
		t.Fatalf("first read = %q, %v", got, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(p); err != nil {
		t.Fatal(err)
	}
	for i, next := range []string{"p1", "p2", "p3"} {
		time.Sleep(1500 * time.Millisecond) // past a sweep, unread
		changed := time.Now()
		b.write("db/password", next)
		select {
		case ev := <-w.Events:
			if !ev.Has(fsnotify.Remove) {
				t.Fatalf("rotation %d: event %v, want Remove", i, ev)
			}
		case err := <-w.Errors:
			t.Fatalf("rotation %d: %v", i, err)
		case <-time.After(5 * time.Second):
			t.Fatalf("rotation %d: no event within 5s", i)
		}
		t.Logf("rotation %d heard after %v", i, time.Since(changed).Round(time.Millisecond))
		// fsnotify forgets a removed file's watch: add it again, by name.
		if !waitFor(5*time.Second, func() bool { return w.Add(p) == nil }) {
			t.Fatalf("rotation %d: the watch could not be added again", i)
		}
		if got, err := os.ReadFile(p); err != nil || string(got) != next {
			t.Fatalf("rotation %d: read %q, %v after the event; want %q", i, got, err, next)
		}
	}
}

// What a watched file nobody reads costs: about one backend call per 3/4
// of the TTL while the watch lasts, and nothing once it ends; a name read
// once and not watched costs nothing more (TestBackendRefreshAhead).
func TestWatchedFileCost(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"cost/watched": "w"})
	const ttl = time.Second
	d := testMount(t, b, "--ttl", ttl.String())
	p := d.Path("test", "cost", "watched")
	if _, err := os.ReadFile(p); err != nil {
		t.Fatal(err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(p); err != nil {
		t.Fatal(err)
	}
	const span = 6 * time.Second
	time.Sleep(span)
	d.syncLog(t, "test")
	watched := backendCalls(d, "test:cost/watched")
	t.Logf("a watched file nobody reads: %d backend calls over %v at a TTL of %v", watched, span, ttl)
	// Held within a TTL of its read, then one call per 0.75 TTL or so.
	if watched < 5 || watched > 10 {
		t.Errorf("backend calls of a watched file over %v = %d, want about one per 3/4 TTL (5 to 10)", span, watched)
	}
	w.Close() // the watch ends: the kernel lets go of the file
	time.Sleep(2 * ttl)
	d.syncLog(t, "test")
	after := backendCalls(d, "test:cost/watched")
	time.Sleep(3 * ttl)
	d.syncLog(t, "test")
	if got := backendCalls(d, "test:cost/watched"); got != after {
		t.Errorf("backend calls went on after the watch ended: %d, then %d", after, got)
	}
}

// Lookups of the name racing each change (another user's stat loop) do not
// keep a watcher of the file from hearing of it: every node the kernel may
// hold under the name is deleted, and one it holds without the name is
// retired.
func TestFileEventsUnderLookups(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"raced": "r0"})
	d := testMount(t, b, "--ttl", "500ms")
	p := d.Path("test", "raced")
	if _, err := os.ReadFile(p); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					os.Stat(p)
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	heard := 0
	const rotations = 5
	for i := range rotations {
		w := inotifywait(t, p)
		time.Sleep(1200 * time.Millisecond) // past a sweep
		b.write("raced", fmt.Sprintf("r%d", i+1))
		if ev := w.next(5 * time.Second); ev == "DELETE_SELF" {
			heard++
		}
	}
	if heard != rotations {
		t.Errorf("a watcher heard %d of %d changes while others looked the name up", heard, rotations)
	}
}
