package access

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Identities reads what /proc says of callers: groups, executable, cgroup.
// It caches them per (pid, inode of /proc/PID), so that a pid the kernel
// reuses never inherits another process's identity (procfs makes a new
// inode, with a new number, for each process a pid names), and for one
// second at most, so that a process that runs another program, drops groups or moves
// to another cgroup is seen as it is now. It is safe for concurrent use.
type Identities struct {
	Proc string // "/proc" when empty

	once   sync.Once
	mntNS  uint64 // secretfs's own mount namespace; set once
	nsErr  error  // why it could not be read; set once
	cgroot string // where cgroup v2 is mounted here, or ""; set once

	mu    sync.Mutex
	cache map[procKey]cached // guarded by mu
}

type procKey struct {
	pid uint32
	ino uint64 // of /proc/PID: one process's
}

type cached struct {
	caller Caller
	read   time.Time
}

// identityTTL is how long what /proc said of a process is trusted.
const identityTTL = time.Second

// maxIdentities bounds the cache; it starts afresh when full.
const maxIdentities = 4096

// Caller returns who pid (with uid and gid from the FUSE request) is.
func (ids *Identities) Caller(pid, uid, gid uint32) Caller {
	proc := ids.Proc
	if proc == "" {
		proc = "/proc"
	}
	dir := proc + "/" + strconv.FormatUint(uint64(pid), 10)
	start, err := procIno(dir)
	if err == nil {
		ids.mu.Lock()
		e, ok := ids.cache[procKey{pid, start}]
		ids.mu.Unlock()
		if ok && time.Since(e.read) < identityTTL {
			c := e.caller
			c.UID, c.GID = uid, gid
			return c
		}
	}
	ids.once.Do(func() { ids.init(proc) })
	c := Caller{PID: pid, UID: uid, GID: gid}
	c.Groups = groups(dir)
	ids.program(dir, &c)
	ids.cgroup(dir, &c)
	if err == nil {
		// Read again after: an inode that changed meanwhile means the pid
		// was reused while we read, and nothing is kept.
		if again, err := procIno(dir); err == nil && again == start {
			ids.mu.Lock()
			if ids.cache == nil || len(ids.cache) >= maxIdentities {
				ids.cache = make(map[procKey]cached)
			}
			ids.cache[procKey{pid, start}] = cached{c, time.Now()}
			ids.mu.Unlock()
		}
	}
	return c
}

// init learns what callers are compared with: secretfs's own mount
// namespace, and where cgroup v2 is mounted.
func (ids *Identities) init(proc string) {
	var st unix.Stat_t
	if ids.nsErr = unix.Stat(proc+"/self/ns/mnt", &st); ids.nsErr == nil {
		ids.mntNS = st.Ino
	}
	data, _ := os.ReadFile(proc + "/self/mounts")
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) >= 3 && f[2] == "cgroup2" {
			ids.cgroot = f[1]
			break
		}
	}
}

// program reads what the caller runs: the path, the file, and whether the
// path names that file in secretfs's mount namespace. What cannot be read
// is an error in c.ExeErr, so that a rule asking for a program denies.
func (ids *Identities) program(dir string, c *Caller) {
	if c.Exe, c.ExeErr = os.Readlink(dir + "/exe"); c.ExeErr != nil {
		return
	}
	var st, ns, here unix.Stat_t
	if err := unix.Stat(dir+"/exe", &st); err != nil {
		c.ExeErr = err
		return
	}
	c.ExeFile = File{Dev: st.Dev, Ino: st.Ino}
	if ids.nsErr != nil {
		c.ExeErr = fmt.Errorf("secretfs's own mount namespace: %w", ids.nsErr)
		return
	}
	if err := unix.Stat(dir+"/ns/mnt", &ns); err != nil {
		c.ExeErr = fmt.Errorf("the caller's mount namespace: %w", err)
		return
	}
	c.MntNS, c.OtherMntNS = ns.Ino, ns.Ino != ids.mntNS
	if !c.OtherMntNS && unix.Stat(c.Exe, &here) == nil {
		c.ExeHere = here.Dev == st.Dev && here.Ino == st.Ino
	}
}

// cgroup reads the caller's cgroup, and whether it lies in a delegated
// subtree (see Caller.Delegated), from its directory up to the root. A
// cgroup whose directories cannot be read, or whose path leaves the root
// (a caller in another cgroup namespace), is an error in c.CgroupErr: who
// made it cannot be told.
func (ids *Identities) cgroup(dir string, c *Caller) {
	if c.Cgroup, c.CgroupErr = cgroup(dir); c.CgroupErr != nil {
		return
	}
	if ids.cgroot == "" {
		c.CgroupErr = errors.New("cgroup v2 is not mounted here: whether the caller's cgroup is delegated cannot be told")
		return
	}
	if !strings.HasPrefix(c.Cgroup, "/") || slices.Contains(strings.Split(c.Cgroup, "/"), "..") {
		c.CgroupErr = fmt.Errorf("cgroup %q is outside secretfs's cgroup namespace", c.Cgroup)
		return
	}
	for p := c.Cgroup; ; p = filepath.Dir(p) {
		d := filepath.Join(ids.cgroot, p)
		for _, f := range []string{d, d + "/cgroup.procs"} {
			var st unix.Stat_t
			if err := unix.Stat(f, &st); err != nil {
				c.CgroupErr = fmt.Errorf("cgroup %s: %w", p, err)
				return
			}
			if st.Uid != 0 || st.Mode&0o022 != 0 {
				c.DelegatedAt = p
			}
		}
		if p == "/" {
			return
		}
	}
}

// procIno is the inode number of /proc/PID: one stat, on every open in
// audit mode.
func procIno(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

func groups(dir string) []uint32 {
	data, err := os.ReadFile(dir + "/status")
	if err != nil {
		return nil
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			var out []uint32
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.ParseUint(f, 10, 32); err == nil {
					out = append(out, uint32(g))
				}
			}
			return out
		}
	}
	return nil
}

// cgroup is the process's cgroup v2 path (the "0::" line), or the first
// hierarchy's under v1.
func cgroup(dir string) (string, error) {
	data, err := os.ReadFile(dir + "/cgroup")
	if err != nil {
		return "", err
	}
	first := ""
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			return parts[2], nil
		}
		if first == "" {
			first = parts[2]
		}
	}
	if first == "" {
		return "", fmt.Errorf("%s/cgroup: no cgroup", dir)
	}
	return first, nil
}

var containerID = regexp.MustCompile(`(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?:/|$)`)

// ContainerID is the id of the container a cgroup path names (docker,
// containerd, cri-o, podman, kubepods), or "".
func ContainerID(cgroup string) string {
	m := containerID.FindAllStringSubmatch(cgroup, -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}
