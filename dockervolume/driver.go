// Package dockervolume is secretfs as a Docker volume plugin: Docker's
// volume protocol (go-plugins-helpers' volume.Driver) over volumes that
// are secretfs mounts.
//
// A volume is a name and its options, checked when it is created and kept
// in a state file. It is mounted (below the base directory, at BASE/NAME)
// when the first container that uses it starts: Docker calls Mount once
// per container with an ID of its own, the first ID mounts and the others
// are counted; Unmount of the last ID unmounts. A volume in use cannot be
// removed.
//
// Each mounted volume is a `secretfs mount` process of its own, in a
// session of its own (see Mounter): one volume's failure or load never
// reaches another, and the mounts outlive the plugin. When the plugin
// starts again it reads the state (names and options: the arguments of
// every mount are made again by the Checker, so that the plugin's flags
// of now apply), adopts every mount that still answers, and mounts again,
// at the same path, those that do not, all at once and for at most
// RestoreWait before it answers Docker (a volume still being restored
// then makes its own calls wait). A later container of a volume whose
// mount died gets a new mount. Volumes with identical options do not
// share an engine: each has its own cache, audit and rules.
package dockervolume

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// Checker turns a volume's options into the arguments of its mount
// (without the mountpoint), or says which option is wrong.
type Checker func(name string, opts map[string]string) ([]string, error)

// Mounter starts and stops the mounts of volumes.
type Mounter interface {
	// Mount mounts at dir with args and returns the pid of the mount's
	// process once it answers.
	Mount(dir string, args []string) (pid int, err error)
	// Unmount unmounts dir, mounted by pid (which may be gone), and
	// returns once it is no longer mounted.
	Unmount(dir string, pid int) error
	// Alive reports whether dir is a mount of pid that answers.
	Alive(dir string, pid int) bool
}

// Vol is a volume as the state file keeps it.
type Vol struct {
	Name    string            `json:"name"`
	Options map[string]string `json:"options"`
	Created time.Time         `json:"created"`
	// IDs are the mounts Docker asked for and has not given back; while
	// there is one, the volume is mounted by Pid.
	IDs []string `json:"ids,omitempty"`
	Pid int      `json:"pid,omitempty"`

	args []string // of its mount, from the Checker; nil when bad
	bad  error    // why the Checker refuses it now (a volume of an older configuration)

	// op is held across a mount or an unmount of this volume, and a
	// removal: they never overlap, and other volumes never wait on them.
	op sync.Mutex
}

// Driver serves Docker's volume protocol. It is safe for concurrent use.
type Driver struct {
	base    string
	state   string
	check   Checker
	mounter Mounter
	log     *slog.Logger

	mu   sync.Mutex      // never held across a mount or an unmount (Vol.op is)
	vols map[string]*Vol // guarded by mu; and every Vol's fields but op
}

// ValidName is a volume name as Docker allows it, and so a safe directory
// (and file) name.
var ValidName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// RestoreWait bounds how long New waits for the volumes it mounts again.
const RestoreWait = 20 * time.Second

// New returns a driver whose mounts live below base and whose state is
// kept in the file state. It loads that state and restores its volumes:
// a mount that still answers is adopted, one that does not is mounted
// again at the same path.
func New(base, state string, check Checker, m Mounter, log *slog.Logger) (*Driver, error) {
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	// Mounts are made below base as root: nobody else may put a symlink
	// there.
	if err := trusted(base); err != nil {
		return nil, err
	}
	d := &Driver{base: base, state: state, check: check, mounter: m, log: log, vols: make(map[string]*Vol)}
	data, err := os.ReadFile(state)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return d, nil
	case err != nil:
		return nil, fmt.Errorf("state: %w", err)
	}
	var vols []*Vol
	if err := json.Unmarshal(data, &vols); err != nil {
		return nil, fmt.Errorf("state %s: %w", state, err)
	}
	var restoring []*Vol
	d.mu.Lock()
	for _, v := range vols {
		if !ValidName.MatchString(v.Name) {
			log.Warn("state: a volume with a bad name is left out", "volume", v.Name)
			continue
		}
		if v.args, v.bad = check(v.Name, v.Options); v.bad != nil {
			log.Error("volume refused by the plugin's checks of now: it stays unmounted", "volume", v.Name, "error", v.bad)
		}
		d.vols[v.Name] = v
		if len(v.IDs) > 0 {
			v.op.Lock() // until restored: its calls wait, others do not
			restoring = append(restoring, v)
		}
	}
	d.mu.Unlock()
	done := make(chan struct{}, len(restoring))
	for _, v := range restoring {
		go func() {
			defer func() { v.op.Unlock(); done <- struct{}{} }()
			d.restore(v)
		}()
	}
	timeout := time.After(RestoreWait)
	for range restoring {
		select {
		case <-done:
		case <-timeout:
			log.Warn("volumes still being restored; serving meanwhile", "after", RestoreWait)
			return d, nil
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d, d.save()
}

// restore adopts v's mount, or mounts it again. Called with v.op held.
func (d *Driver) restore(v *Vol) {
	d.mu.Lock()
	pid, args, bad := v.Pid, v.args, v.bad
	d.mu.Unlock()
	dir := d.dir(v.Name)
	if bad == nil && d.mounter.Alive(dir, pid) {
		d.log.Info("volume still mounted: adopted", "volume", v.Name, "pid", pid)
		return
	}
	d.mounter.Unmount(dir, pid) // what is left of it, if anything
	var err error
	if pid, err = 0, bad; err == nil {
		pid, err = d.mounter.Mount(dir, args)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.log.Error("volume not mounted again; its containers cannot read it", "volume", v.Name, "error", err)
		v.IDs, v.Pid = nil, 0
	} else {
		v.Pid = pid
		d.log.Info("volume mounted again", "volume", v.Name, "pid", pid, "mounts", len(v.IDs))
	}
	if err := d.save(); err != nil {
		d.log.Error("state not saved", "error", err)
	}
}

// trusted refuses a directory that someone other than this process's user
// owns, or that group or others may write.
func trusted(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s: want a directory of uid %d that group and others may not write (mounts are made below it)", dir, os.Geteuid())
	}
	return nil
}

func (d *Driver) dir(name string) string { return filepath.Join(d.base, name) }

// save writes the state: a new file, renamed over the old.
func (d *Driver) save() error {
	vols := slices.Collect(maps.Values(d.vols))
	slices.SortFunc(vols, func(a, b *Vol) int { return strings.Compare(a.Name, b.Name) })
	data, err := json.MarshalIndent(vols, "", "  ")
	if err != nil {
		return err
	}
	tmp := d.state + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(tmp, d.state); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// Create checks the options and keeps the volume; it mounts nothing.
// Docker asks again for volumes it knows after a restart: the same name
// with the same options is no error.
func (d *Driver) Create(r *volume.CreateRequest) error {
	if !ValidName.MatchString(r.Name) {
		return fmt.Errorf("volume name %q: want letters, digits, '_', '.' and '-'", r.Name)
	}
	args, err := d.check(r.Name, r.Options)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if v, ok := d.vols[r.Name]; ok {
		if maps.Equal(v.Options, r.Options) || len(r.Options) == 0 {
			return nil
		}
		return fmt.Errorf("volume %s exists with other options", r.Name)
	}
	d.vols[r.Name] = &Vol{Name: r.Name, Options: maps.Clone(r.Options), args: args, Created: time.Now().UTC()}
	if err := d.save(); err != nil {
		delete(d.vols, r.Name)
		return err
	}
	d.log.Info("volume created", "volume", r.Name)
	return nil
}

func (d *Driver) vol(name string) (*Vol, error) {
	v, ok := d.vols[name]
	if !ok {
		return nil, fmt.Errorf("no volume %q", name)
	}
	return v, nil
}

// op returns the volume, its op lock held.
func (d *Driver) op(name string) (*Vol, error) {
	d.mu.Lock()
	v, err := d.vol(name)
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	v.op.Lock()
	return v, nil
}

// Remove forgets a volume no container uses.
func (d *Driver) Remove(r *volume.RemoveRequest) error {
	v, err := d.op(r.Name)
	if err != nil {
		return err
	}
	defer v.op.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.vols[r.Name] != v {
		return fmt.Errorf("no volume %q", r.Name)
	}
	if len(v.IDs) > 0 {
		return fmt.Errorf("volume %s is in use by %d container(s)", r.Name, len(v.IDs))
	}
	delete(d.vols, r.Name)
	if err := d.save(); err != nil {
		d.vols[r.Name] = v
		return err
	}
	os.Remove(d.dir(r.Name))
	d.log.Info("volume removed", "volume", r.Name)
	return nil
}

// Mount mounts the volume for the first ID and counts the others.
func (d *Driver) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	v, err := d.op(r.Name)
	if err != nil {
		return nil, err
	}
	defer v.op.Unlock()
	dir := d.dir(r.Name)
	d.mu.Lock()
	first, removed := len(v.IDs) == 0, d.vols[r.Name] != v
	known := slices.Contains(v.IDs, r.ID)
	args, bad, old := v.args, v.bad, v.Pid
	d.mu.Unlock()
	switch {
	case removed:
		return nil, fmt.Errorf("no volume %q", r.Name)
	case bad != nil:
		return nil, bad
	case known:
		return &volume.MountResponse{Mountpoint: dir}, nil
	}
	mount := first
	if !first && !d.mounter.Alive(dir, old) {
		// Its mount died: the containers that hold it keep a dead mount,
		// but this one gets a new one.
		d.log.Warn("volume's mount is dead: mounting it again", "volume", r.Name, "pid", old)
		d.mounter.Unmount(dir, old)
		mount = true
	}
	var pid int
	if mount {
		start := time.Now()
		if pid, err = d.mounter.Mount(dir, args); err != nil {
			return nil, fmt.Errorf("volume %s: %w", r.Name, err)
		}
		d.log.Info("volume mounted", "volume", r.Name, "pid", pid, "took", time.Since(start).Round(time.Millisecond))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if mount {
		v.Pid = pid
	}
	v.IDs = append(v.IDs, r.ID)
	if err := d.save(); err != nil {
		d.log.Error("state not saved", "error", err)
	}
	return &volume.MountResponse{Mountpoint: dir}, nil
}

// Unmount gives back one ID; the last one unmounts.
func (d *Driver) Unmount(r *volume.UnmountRequest) error {
	v, err := d.op(r.Name)
	if err != nil {
		return err
	}
	defer v.op.Unlock()
	d.mu.Lock()
	i, last, pid := slices.Index(v.IDs, r.ID), len(v.IDs) == 1, v.Pid
	d.mu.Unlock()
	if i < 0 {
		return fmt.Errorf("volume %s: no mount %s", r.Name, r.ID)
	}
	var uerr error
	if last {
		// The ID is given back whatever happens: a volume never stays in
		// use for an unmount that failed.
		if uerr = d.mounter.Unmount(d.dir(r.Name), pid); uerr != nil {
			d.log.Error("volume not unmounted", "volume", r.Name, "error", uerr)
			uerr = fmt.Errorf("volume %s: %w", r.Name, uerr)
		} else {
			d.log.Info("volume unmounted", "volume", r.Name)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v.IDs = slices.Delete(v.IDs, i, i+1)
	if last {
		v.Pid = 0
	}
	if err := d.save(); err != nil {
		d.log.Error("state not saved", "error", err)
	}
	return uerr
}

// Path is where the volume is mounted, or "" while it is not.
func (d *Driver) Path(r *volume.PathRequest) (*volume.PathResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.vol(r.Name)
	if err != nil {
		return nil, err
	}
	return &volume.PathResponse{Mountpoint: d.mountpoint(v)}, nil
}

func (d *Driver) mountpoint(v *Vol) string {
	if len(v.IDs) == 0 {
		return ""
	}
	return d.dir(v.Name)
}

func (d *Driver) describe(v *Vol) *volume.Volume {
	return &volume.Volume{Name: v.Name, Mountpoint: d.mountpoint(v), CreatedAt: v.Created.Format(time.RFC3339),
		Status: map[string]any{"mounts": len(v.IDs), "options": v.Options}}
}

// Get describes one volume.
func (d *Driver) Get(r *volume.GetRequest) (*volume.GetResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.vol(r.Name)
	if err != nil {
		return nil, err
	}
	return &volume.GetResponse{Volume: d.describe(v)}, nil
}

// List describes every volume.
func (d *Driver) List() (*volume.ListResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := &volume.ListResponse{Volumes: []*volume.Volume{}}
	for _, name := range slices.Sorted(maps.Keys(d.vols)) {
		out.Volumes = append(out.Volumes, d.describe(d.vols[name]))
	}
	return out, nil
}

// Capabilities: volumes are this host's.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}
