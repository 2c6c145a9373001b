package dockervolume

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
)

// mounter is a Mounter that keeps its mounts in a map.
type mounter struct {
	mu      sync.Mutex
	mounted map[string]int // guarded by mu; dir → pid
	dead    map[string]bool
	next    int
	calls   []string // guarded by mu
	fail    error
	// failUnmount is what Unmount returns; guarded by mu.
	failUnmount error
}

func newMounter() *mounter {
	return &mounter{mounted: map[string]int{}, dead: map[string]bool{}, next: 100}
}

func (m *mounter) Mount(dir string, args []string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "mount "+filepath.Base(dir)+" "+strings.Join(args, " "))
	if m.fail != nil {
		return 0, m.fail
	}
	m.next++
	m.mounted[dir] = m.next
	delete(m.dead, dir)
	return m.next, nil
}

func (m *mounter) Unmount(dir string, pid int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "unmount "+filepath.Base(dir))
	delete(m.mounted, dir)
	return m.failUnmount
}

func (m *mounter) Alive(dir string, pid int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mounted[dir] == pid && !m.dead[dir]
}

func (m *mounter) log() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

func check(name string, opts map[string]string) ([]string, error) {
	if opts["bad"] != "" {
		return nil, errors.New("volume " + name + ": unknown option \"bad\"")
	}
	var args []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range opts {
			if !yield(k) {
				return
			}
		}
	}) {
		args = append(args, "--"+k+"="+opts[k])
	}
	return args, nil
}

func newDriver(t *testing.T, dir string, m Mounter) *Driver {
	t.Helper()
	d, err := New(filepath.Join(dir, "base"), filepath.Join(dir, "state"), check, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Mount is called once per container: the first mounts, the others are
// counted, and the last Unmount unmounts. A volume in use is not removed.
func TestMountsAreCounted(t *testing.T) {
	m := newMounter()
	d := newDriver(t, t.TempDir(), m)
	if err := d.Create(&volume.CreateRequest{Name: "v", Options: map[string]string{"providers": "aws"}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "v", Options: map[string]string{"providers": "vault"}}); err == nil {
		t.Error("a second Create with other options succeeded")
	}
	if err := d.Create(&volume.CreateRequest{Name: "v", Options: map[string]string{"providers": "aws"}}); err != nil {
		t.Errorf("Create again with the same options (Docker does after a restart): %v", err)
	}
	for _, id := range []string{"a", "b", "b"} {
		r, err := d.Mount(&volume.MountRequest{Name: "v", ID: id})
		if err != nil || filepath.Base(r.Mountpoint) != "v" {
			t.Fatalf("Mount %s = %v, %v", id, r, err)
		}
	}
	if got := m.log(); len(got) != 1 || got[0] != "mount v --providers=aws" {
		t.Errorf("mounter calls = %q, want one mount", got)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Remove of a volume in use = %v, want refused", err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "v", ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if p, _ := d.Path(&volume.PathRequest{Name: "v"}); p.Mountpoint == "" {
		t.Error("unmounted with a container still using it")
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "v", ID: "b"}); err != nil {
		t.Fatal(err)
	}
	if p, _ := d.Path(&volume.PathRequest{Name: "v"}); p.Mountpoint != "" {
		t.Errorf("Path after the last Unmount = %q, want none", p.Mountpoint)
	}
	if got := m.log(); len(got) != 2 || got[1] != "unmount v" {
		t.Errorf("mounter calls = %q, want mount then unmount", got)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "v", ID: "b"}); err == nil {
		t.Error("Unmount of an ID given back already succeeded")
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Errorf("Remove = %v", err)
	}
	if _, err := d.Get(&volume.GetRequest{Name: "v"}); err == nil {
		t.Error("Get of a removed volume succeeded")
	}
}

// Bad names and options fail Create, naming what is wrong; nothing is kept
// or mounted.
func TestCreateRefuses(t *testing.T) {
	m := newMounter()
	d := newDriver(t, t.TempDir(), m)
	for _, r := range []volume.CreateRequest{
		{Name: "../etc"}, {Name: "a/b"}, {Name: ".hidden"}, {Name: ""},
		{Name: "ok", Options: map[string]string{"bad": "1"}},
	} {
		if err := d.Create(&r); err == nil {
			t.Errorf("Create(%q, %v) succeeded", r.Name, r.Options)
		}
	}
	if l, _ := d.List(); len(l.Volumes) != 0 || len(m.log()) != 0 {
		t.Errorf("after refused creates: %d volumes, mounter %q", len(l.Volumes), m.log())
	}
	if _, err := d.Mount(&volume.MountRequest{Name: "nope", ID: "x"}); err == nil {
		t.Error("Mount of an unknown volume succeeded")
	}
}

// The state survives the plugin: a mount that still answers is adopted, one
// that does not is mounted again at the same path; volumes not in use stay
// known.
func TestStateSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	m := newMounter()
	d := newDriver(t, dir, m)
	for _, name := range []string{"alive", "dead", "idle"} {
		if err := d.Create(&volume.CreateRequest{Name: name, Options: map[string]string{"ttl": "1s"}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"alive", "dead"} {
		if _, err := d.Mount(&volume.MountRequest{Name: name, ID: "c1"}); err != nil {
			t.Fatal(err)
		}
	}
	m.dead[filepath.Join(dir, "base", "dead")] = true
	before := len(m.log())
	d2 := newDriver(t, dir, m)
	l, _ := d2.List()
	var names []string
	for _, v := range l.Volumes {
		names = append(names, v.Name+":"+filepath.Base(v.Mountpoint))
	}
	if got, want := strings.Join(names, ","), "alive:alive,dead:dead,idle:."; got != want {
		t.Errorf("after a restart: %s, want %s", got, want)
	}
	if got := m.log()[before:]; strings.Join(got, ";") != "unmount dead;mount dead --ttl=1s" {
		t.Errorf("mounter calls at restart = %q, want the dead one mounted again only", got)
	}
	// The counts came back too: the last Unmount unmounts.
	if err := d2.Unmount(&volume.UnmountRequest{Name: "alive", ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if got := m.log(); got[len(got)-1] != "unmount alive" {
		t.Errorf("last call %q, want unmount alive", got[len(got)-1])
	}
}

// A mount that fails is Docker's error, and the volume stays unmounted.
func TestMountFailure(t *testing.T) {
	m := newMounter()
	m.fail = errors.New("secretfs mount failed (exit status 1): see the plugin's log")
	d := newDriver(t, t.TempDir(), m)
	d.Create(&volume.CreateRequest{Name: "v"})
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: "a"}); err == nil || !strings.Contains(err.Error(), "plugin's log") {
		t.Errorf("Mount = %v, want the mounter's error", err)
	}
	if p, _ := d.Path(&volume.PathRequest{Name: "v"}); p.Mountpoint != "" {
		t.Errorf("Path = %q after a failed mount", p.Mountpoint)
	}
}

// The state keeps names and options; the arguments of every mount are
// made again by the checker of now, so that a volume the plugin's flags no
// longer allow is not mounted, whatever the state file says.
func TestStateArgumentsAreCheckedAgain(t *testing.T) {
	dir := t.TempDir()
	m := newMounter()
	d := newDriver(t, dir, m)
	d.Create(&volume.CreateRequest{Name: "v", Options: map[string]string{"ttl": "1s"}})
	d.Mount(&volume.MountRequest{Name: "v", ID: "c1"})
	// The state file is edited to carry arguments: they are not read.
	data, _ := os.ReadFile(filepath.Join(dir, "state"))
	os.WriteFile(filepath.Join(dir, "state"), []byte(strings.Replace(string(data), `"name"`, `"args": ["--exec-provider=x=/bin/sh"], "name"`, 1)), 0o600)
	m.dead[filepath.Join(dir, "base", "v")] = true
	d2 := newDriver(t, dir, m)
	if got := m.log(); !strings.Contains(got[len(got)-1], "mount v --ttl=1s") {
		t.Errorf("the mount made again: %q, want the checker's arguments", got[len(got)-1])
	}
	// A checker that now refuses the volume: it stays unmounted.
	refuse := func(name string, _ map[string]string) ([]string, error) {
		return nil, errors.New("volume " + name + ": refused now")
	}
	m.dead[filepath.Join(dir, "base", "v")] = true
	d3, err := New(filepath.Join(dir, "base"), filepath.Join(dir, "state"), refuse, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d3.Mount(&volume.MountRequest{Name: "v", ID: "c2"}); err == nil || !strings.Contains(err.Error(), "refused now") {
		t.Errorf("Mount of a volume the checker refuses now: %v", err)
	}
	_ = d2
}

// A later container of a volume whose mount died gets a new mount; an
// unmount that fails still gives the ID back.
func TestDeadMountsAreMountedAgain(t *testing.T) {
	dir := t.TempDir()
	m := newMounter()
	d := newDriver(t, dir, m)
	d.Create(&volume.CreateRequest{Name: "v"})
	d.Mount(&volume.MountRequest{Name: "v", ID: "c1"})
	m.dead[filepath.Join(dir, "base", "v")] = true
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: "c2"}); err != nil {
		t.Fatal(err)
	}
	if got := m.log(); strings.Join(got, ";") != "mount v ;unmount v;mount v " {
		t.Errorf("mounter calls = %q, want the dead mount replaced", got)
	}
	m.mu.Lock()
	m.failUnmount = errors.New("still mounted after 10s")
	m.mu.Unlock()
	d.Unmount(&volume.UnmountRequest{Name: "v", ID: "c1"})
	if err := d.Unmount(&volume.UnmountRequest{Name: "v", ID: "c2"}); err == nil {
		t.Error("a failed unmount was not reported")
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Errorf("Remove after a failed last unmount: %v, want the ID given back", err)
	}
}
