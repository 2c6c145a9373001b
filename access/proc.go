package access

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Identities reads what /proc says of callers: groups, executable, cgroup.
// It caches them per (pid, process start time), so that a pid the kernel
// reuses never inherits another process's identity. It is safe for
// concurrent use.
type Identities struct {
	Proc string // "/proc" when empty

	mu    sync.Mutex
	cache map[procKey]Caller // guarded by mu
}

type procKey struct {
	pid   uint32
	start uint64
}

// maxIdentities bounds the cache; it starts afresh when full.
const maxIdentities = 4096

// Caller returns who pid (with uid and gid from the FUSE request) is.
func (ids *Identities) Caller(pid, uid, gid uint32) Caller {
	proc := ids.Proc
	if proc == "" {
		proc = "/proc"
	}
	dir := proc + "/" + strconv.FormatUint(uint64(pid), 10)
	start, err := startTime(dir)
	if err == nil {
		ids.mu.Lock()
		c, ok := ids.cache[procKey{pid, start}]
		ids.mu.Unlock()
		if ok {
			c.UID, c.GID = uid, gid
			return c
		}
	}
	c := Caller{PID: pid, UID: uid, GID: gid}
	c.Groups = groups(dir)
	c.Exe, c.ExeErr = os.Readlink(dir + "/exe")
	c.Cgroup, c.CgroupErr = cgroup(dir)
	if err == nil {
		// Read again after: a start time that changed meanwhile means the
		// pid was reused while we read, and nothing is kept.
		if again, err := startTime(dir); err == nil && again == start {
			ids.mu.Lock()
			if ids.cache == nil || len(ids.cache) >= maxIdentities {
				ids.cache = make(map[procKey]Caller)
			}
			ids.cache[procKey{pid, start}] = c
			ids.mu.Unlock()
		}
	}
	return c
}

// startTime is field 22 of /proc/PID/stat: when the process started.
func startTime(dir string) (uint64, error) {
	data, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, err
	}
	// The command (field 2) may hold spaces and parentheses: fields are
	// counted after its closing parenthesis.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s/stat: no command", dir)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 {
		return 0, fmt.Errorf("%s/stat: short", dir)
	}
	return strconv.ParseUint(fields[19], 10, 64) // field 22 is the 20th after the command
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
