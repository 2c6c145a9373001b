package onchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// engine is a fake of the cache: values by "provider:key", listings by
// "provider:dir".
type engine struct {
	mu       sync.Mutex
	values   map[string]string   // guarded by mu
	listings map[string][]string // guarded by mu
	held     map[string]int      // guarded by mu
}

func newEngine(values map[string]string) *engine {
	return &engine{values: values, listings: map[string][]string{}, held: map[string]int{}}
}

func (e *engine) set(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if v == "" {
		delete(e.values, k)
		return
	}
	e.values[k] = v
}

func (e *engine) Get(ctx context.Context, ref resolver.Reference) (cache.Value, error) {
	field := ref.Field
	ref.Field = ""
	e.mu.Lock()
	v, ok := e.values[ref.String()]
	e.mu.Unlock()
	if !ok {
		return cache.Value{}, fmt.Errorf("%s: %w", ref, resolver.ErrNotFound)
	}
	if field != "" {
		var m map[string]string
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			return cache.Value{}, err
		}
		v = m[field]
	}
	return cache.Value{Secret: resolver.Secret{Value: []byte(v)}}, nil
}

func (e *engine) List(ctx context.Context, provider, dir string) (*cache.Listing, time.Duration, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return cache.NewListing(e.listings[provider+":"+dir]), 0, nil
}

func (e *engine) Hold(ref resolver.Reference) func() {
	e.mu.Lock()
	e.held[ref.String()]++
	e.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			e.held[ref.String()]--
			e.mu.Unlock()
		})
	}
}

func (e *engine) holds() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k, n := range e.held {
		if n != 0 {
			out[k] = n
		}
	}
	return out
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Target
		err  bool
	}{
		{in: "aws:prod/db#password", want: Target{Ref: resolver.Reference{Provider: "aws", Key: "prod/db", Field: "password"}}},
		{in: "aws/prod/db#password", want: Target{Ref: resolver.Reference{Provider: "aws", Key: "prod/db", Field: "password"}}},
		{in: "vault:secret/app@3", want: Target{Ref: resolver.Reference{Provider: "vault", Key: "secret/app", Version: "3"}}},
		{in: "aws:prod/*", want: Target{Ref: resolver.Reference{Provider: "aws"}, Glob: "prod/*"}},
		{in: "aws/prod/*/db", want: Target{Ref: resolver.Reference{Provider: "aws"}, Glob: "prod/*/db"}},
		{in: "templates/app.env", want: Target{Template: "app.env"}},
		{in: "templates/", err: true},
		{in: "aws:prod/*#password", err: true},
		{in: "aws:prod/[", err: true},
		{in: "noprovider", err: true},
		{in: "Bad Provider:x*", err: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if tc.err {
				if err == nil {
					t.Fatalf("ParseTarget(%q) = %+v, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseTarget(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	target := []Target{{Ref: resolver.Reference{Provider: "p", Key: "k"}}}
	for _, tc := range []struct {
		name string
		e    Entry
		want string
	}{
		{"nothing watched", Entry{Name: "a", Command: []string{"/bin/true"}}, "names nothing"},
		{"no action", Entry{Name: "a", Targets: target}, "needs a command or a signal"},
		{"both", Entry{Name: "a", Targets: target, Command: []string{"/bin/true"}, Signal: syscall.SIGHUP, PidFile: "/run/x.pid"}, "not both"},
		{"signal without pid file", Entry{Name: "a", Targets: target, Signal: syscall.SIGHUP}, "pid-file"},
		{"missing program", Entry{Name: "a", Targets: target, Command: []string{"/nonexistent/prog"}}, "no such file"},
		{"unknown template", Entry{Name: "a", Targets: []Target{{Template: "nope"}}, Command: []string{"/bin/true"}}, `no template "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New([]Entry{tc.e}, Options{Engine: newEngine(nil)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// recorder is a command that appends SECRETFS_CHANGED to a file, one
// line a run.
func recorder(t *testing.T) (command []string, runs func() []string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "runs")
	return []string{"/bin/sh", "-c", `echo "$SECRETFS_CHANGED" >> ` + out}, func() []string {
		data, _ := os.ReadFile(out)
		return strings.Fields(strings.ReplaceAll(string(data), " ", ","))
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Changes that come together are one run; a change of another field of a
// secret, or that leaves the value as it was, runs nothing; a deletion
// runs it; a glob holds the keys it matches and a new key is a change.
func TestRunsOnRealChangesOnly(t *testing.T) {
	eng := newEngine(map[string]string{"p:db": `{"password":"p1","user":"u1"}`, "p:app/a": "a1", "p:app/b": "b1"})
	eng.listings["p:app"] = []string{"a", "b", "sub/"}
	cmd, runs := recorder(t)
	var (
		mu      sync.Mutex
		results []string
	)
	r, err := New([]Entry{{
		Name:     "e",
		Targets:  []Target{{Ref: resolver.Reference{Provider: "p", Key: "db", Field: "password"}}, {Ref: resolver.Reference{Provider: "p"}, Glob: "app/*"}},
		Command:  cmd,
		Debounce: 50 * time.Millisecond,
	}}, Options{Engine: eng, Relist: time.Hour, Ran: func(res string) { mu.Lock(); results = append(results, res); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Close()
	db, a, b := resolver.Reference{Provider: "p", Key: "db"}, resolver.Reference{Provider: "p", Key: "app/a"}, resolver.Reference{Provider: "p", Key: "app/b"}
	waitUntil(t, "everything watched is held", func() bool {
		h := eng.holds()
		return h["p:db"] == 1 && h["p:app/a"] == 1 && h["p:app/b"] == 1 && len(h) == 3
	})

	// Another field changes: nothing runs.
	eng.set("p:db", `{"password":"p1","user":"u2"}`)
	r.Changed([]resolver.Reference{db})
	time.Sleep(200 * time.Millisecond)
	if got := runs(); len(got) != 0 {
		t.Fatalf("runs after a change of a field not watched: %q", got)
	}

	// The password and both keys change, told apart: one run.
	eng.set("p:db", `{"password":"p2","user":"u2"}`)
	eng.set("p:app/a", "a2")
	eng.set("p:app/b", "b2")
	r.Changed([]resolver.Reference{db})
	time.Sleep(20 * time.Millisecond)
	r.Changed([]resolver.Reference{a})
	time.Sleep(20 * time.Millisecond)
	r.Changed([]resolver.Reference{b, {Provider: "p", Key: "elsewhere"}})
	waitUntil(t, "a run", func() bool { return len(runs()) == 1 })
	time.Sleep(200 * time.Millisecond)
	if got, want := runs(), []string{"p:app/a,p:app/b,p:db#password"}; !slices.Equal(got, want) {
		t.Fatalf("runs = %q, want %q: one run naming all three", got, want)
	}

	// A deletion is a change.
	eng.set("p:app/a", "")
	r.Changed([]resolver.Reference{a})
	waitUntil(t, "a run for the deletion", func() bool { return len(runs()) == 2 })
	if got := runs()[1]; got != "p:app/a" {
		t.Errorf("run for a deletion names %q", got)
	}
	waitUntil(t, "two results", func() bool { mu.Lock(); defer mu.Unlock(); return len(results) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(results, []string{"ok", "ok"}) {
		t.Errorf("results = %q, want two ok", results)
	}
}

// Results are counted by kind; a failure does not stop later runs; a
// hanging command ends at its timeout.
func TestRunResults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		command []string
		want    string
	}{
		{"ok", []string{"/bin/true"}, "ok"},
		{"failing", []string{"/bin/sh", "-c", "echo oops >&2; exit 4"}, "failed"},
		{"hanging", []string{"/bin/sh", "-c", "sleep 30"}, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			eng := newEngine(map[string]string{"p:k": "v1"})
			results := make(chan string, 4)
			r, err := New([]Entry{{Name: tc.name, Targets: []Target{{Ref: resolver.Reference{Provider: "p", Key: "k"}}}, Command: tc.command,
				Debounce: 10 * time.Millisecond, Timeout: 300 * time.Millisecond}}, Options{Engine: eng, Ran: func(s string) { results <- s }})
			if err != nil {
				t.Fatal(err)
			}
			r.Start()
			defer r.Close()
			time.Sleep(50 * time.Millisecond) // the first read
			for i, v := range []string{"v2", "v3"} {
				eng.set("p:k", v)
				r.Changed([]resolver.Reference{{Provider: "p", Key: "k"}})
				select {
				case got := <-results:
					if got != tc.want {
						t.Errorf("run %d: result %q, want %q", i, got, tc.want)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("run %d: no result within 5s", i)
				}
			}
		})
	}
}

// A signal goes to the pid its file holds; a file that holds no pid is a
// failure, not a signal to anyone.
func TestSignalPidFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pid")
	os.WriteFile(bad, []byte("not a pid\n"), 0o600)
	if err := signalPidFile(bad, syscall.SIGHUP); err == nil {
		t.Error("a pid file without a pid: no error")
	}
	one := filepath.Join(dir, "one.pid")
	os.WriteFile(one, []byte("1\n"), 0o600)
	if err := signalPidFile(one, syscall.SIGHUP); err == nil {
		t.Error("a pid file naming init: no error")
	}
	// Numbers the kernel would cut to 32 bits: -1 (every process), 1, a
	// process group.
	for _, big := range []string{"4294967295", "4294967297", "4294952785", "-1", "0"} {
		p := filepath.Join(dir, "big.pid")
		os.WriteFile(p, []byte(big+"\n"), 0o600)
		if err := signalPidFile(p, syscall.Signal(0)); err == nil {
			t.Errorf("a pid file holding %s: no error", big)
		}
	}
	// A symlink in the pid file's place is not followed.
	link := filepath.Join(dir, "link.pid")
	self0 := filepath.Join(dir, "self0.pid")
	os.WriteFile(self0, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600)
	os.Symlink(self0, link)
	if err := signalPidFile(link, syscall.Signal(0)); err == nil {
		t.Error("a pid file that is a symlink: no error")
	}
	if err := signalPidFile(filepath.Join(dir, "missing.pid"), syscall.SIGHUP); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing pid file: %v, want not exist", err)
	}
	// Our own pid, with a signal that does nothing here.
	self := filepath.Join(dir, "self.pid")
	os.WriteFile(self, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600)
	if err := signalPidFile(self, syscall.Signal(0)); err != nil {
		t.Errorf("signal 0 to ourselves: %v", err)
	}
}

// A glob that cannot be listed (here: more names than a glob holds) is
// warned of once, not at every relist, and its listing again is told.
func TestGlobFailureWarnedOnce(t *testing.T) {
	eng := newEngine(map[string]string{})
	var many []string
	for i := range maxGlobKeys + 1 {
		many = append(many, fmt.Sprintf("k%d", i))
	}
	eng.listings["p:big"] = many
	var logs lockedBuffer
	cmd, _ := recorder(t)
	r, err := New([]Entry{{Name: "e", Targets: []Target{{Ref: resolver.Reference{Provider: "p"}, Glob: "big/*"}}, Command: cmd}},
		Options{Engine: eng, Relist: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Close()
	waitUntil(t, "several relists", func() bool { return strings.Count(logs.String(), "msg=") >= 1 })
	time.Sleep(100 * time.Millisecond) // some ten relists more
	if n := strings.Count(logs.String(), "could not be listed"); n != 1 {
		t.Errorf("the failing glob was warned of %d times, want once:\n%s", n, logs.String())
	}
	eng.mu.Lock()
	eng.listings["p:big"] = many[:3]
	eng.mu.Unlock()
	waitUntil(t, "the glob listed again is told", func() bool { return strings.Contains(logs.String(), "listed again") })
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder // guarded by mu
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
