package access

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func parse(t *testing.T, text string) (*Rules, error) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	return Parse(doc.Content[0])
}

const example = `
- path: "aws/prod/**"
  uid: 1000
  gid: 1000
  mode: "0440"
  allow:
    uids: [1000]
    gids: [2000]
    exe: ["/usr/local/bin/myapp", "/opt/*/bin/tool"]
    cgroups: ["*/docker-3f9c*"]
- path: "env/*"
  mode: "0444"
- path: "vault/secret/team?/db"
  allow:
    uids: [0]
`

func TestMatchAndPermits(t *testing.T) {
	rs, err := parse(t, example)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Len() != 3 || !rs.HasAllow() {
		t.Fatalf("%d rules, allow %v", rs.Len(), rs.HasAllow())
	}
	for path, want := range map[string]int{
		"aws/prod/db#password": 1, "aws/prod/a/b": 1, "aws/production": 0, "env/HOME": 2, "env/a/b": 0,
		"vault/secret/team1/db": 3, "vault/secret/team12/db": 0,
	} {
		got := 0
		if r := rs.Match(path); r != nil {
			got = r.Index
		}
		if got != want {
			t.Errorf("Match(%q) = rule %d, want %d", path, got, want)
		}
	}
	r := rs.Match("aws/prod/db")
	if *r.UID != 1000 || *r.Mode != 0o440 {
		t.Errorf("rule 1: uid %d mode %o", *r.UID, *r.Mode)
	}
	good := Caller{UID: 1000, GID: 5, Groups: []uint32{2000}, Exe: "/opt/x/bin/tool", ExeHere: true, Cgroup: "/system.slice/docker-3f9cabc.scope"}
	tests := []struct {
		name   string
		change func(*Caller)
		want   bool
		why    string
	}{
		{"all kinds match", func(*Caller) {}, true, ""},
		{"gid itself", func(c *Caller) { c.GID, c.Groups = 2000, nil }, true, ""},
		{"another uid", func(c *Caller) { c.UID = 1001 }, false, "uid 1001"},
		{"no group", func(c *Caller) { c.Groups = nil }, false, "gid"},
		{"another program", func(c *Caller) { c.Exe = "/usr/bin/cat" }, false, "/usr/bin/cat"},
		{"unreadable program", func(c *Caller) { c.ExeErr = os.ErrPermission }, false, "cannot be read"},
		{"another cgroup", func(c *Caller) { c.Cgroup = "/user.slice" }, false, "/user.slice"},
		{"unreadable cgroup", func(c *Caller) { c.CgroupErr = errors.New("gone") }, false, "cannot be read"},
		{"the path names another file here", func(c *Caller) { c.ExeHere = false }, false, "not the file"},
		{"another mount namespace, where the rule pins the cgroup", func(c *Caller) { c.ExeHere, c.OtherMntNS = false, true }, true, ""},
		{"a delegated cgroup", func(c *Caller) { c.DelegatedAt = "/system.slice" }, false, "delegated"},
	}
	for _, tt := range tests {
		c := good
		tt.change(&c)
		ok, why := r.Permits(c)
		if ok != tt.want || !strings.Contains(why, tt.why) {
			t.Errorf("%s: Permits = %v, %q; want %v and a reason with %q", tt.name, ok, why, tt.want, tt.why)
		}
	}
	if ok, _ := rs.Match("env/X").Permits(Caller{UID: 42}); !ok {
		t.Error("a rule without allow denies")
	}
}

// /proc/PID/exe is a path in the caller's own mount namespace, which an
// unprivileged user can make anew: a program is matched by its file.
func TestProgramIsMatchedByItsFile(t *testing.T) {
	rs, err := parse(t, `
- path: "exe/only"
  allow: {exe: ["/usr/local/bin/myapp"]}
- path: "exe/pinned"
  allow: {exe: ["/usr/local/bin/myapp"], cgroups: ["*docker-3f9c*"]}
- path: "rootless"
  allow: {cgroups: ["*/app.slice/*"], delegated: true}
`)
	if err != nil {
		t.Fatal(err)
	}
	here := Caller{UID: 1000, Exe: "/usr/local/bin/myapp", ExeHere: true, Cgroup: "/user.slice"}
	container := Caller{UID: 1000, Exe: "/usr/local/bin/myapp", OtherMntNS: true, Cgroup: "/system.slice/docker-3f9c0123.scope"}
	delegated := Caller{UID: 1000, Cgroup: "/user.slice/user-1000.slice/user@1000.service/app.slice/docker-3f9c0123.scope", DelegatedAt: "/user.slice/user-1000.slice/user@1000.service"}
	tests := []struct {
		name, rule string
		c          Caller
		want       bool
		why        string
	}{
		{"the allowed file, here", "exe/only", here, true, ""},
		{"the allowed path, another file", "exe/only", func() Caller { c := here; c.ExeHere = false; return c }(), false, "not the file"},
		{"another mount namespace, unpinned", "exe/only", container, false, "another mount namespace"},
		{"another mount namespace, pinned", "exe/pinned", container, true, ""},
		{"a delegated cgroup named like a container", "exe/pinned", func() Caller { c := delegated; c.Exe, c.OtherMntNS = "/usr/local/bin/myapp", true; return c }(), false, "delegated"},
		{"a delegated cgroup where the rule says so", "rootless", delegated, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := rs.Match(tt.rule).Permits(tt.c)
			if ok != tt.want || !strings.Contains(why, tt.why) {
				t.Errorf("Permits = %v, %q; want %v and a reason with %q", ok, why, tt.want, tt.why)
			}
		})
	}
	if root := delegated; func() bool { root.UID = 0; return !root.Delegated() }() {
		t.Error("a root caller in a delegated cgroup (a setuid program the user ran there) is not delegated")
	}
	if got := delegated.Container(); got != "" {
		t.Errorf("Container() of a delegated cgroup = %q, want none", got)
	}
	if _, err := parse(t, `- path: "a"`+"\n  allow: {uids: [1], delegated: true}"); err == nil {
		t.Error("delegated without cgroups: no error")
	}
}

func TestBadRules(t *testing.T) {
	for _, text := range []string{
		`- path: "a/**"` + "\n  mode: \"999\"",
		`- path: "/abs/**"`,
		`- path: "a/***"`,
		`- mode: "0400"`,
		`- path: "a"` + "\n  owner: 1",
		`- path: "a"` + "\n  allow: {uids: []}",
		`- path: "a"` + "\n  allow: {users: [1]}",
		`- path: "a"` + "\n  allow:\n  # uids: [1]",
		`- path: "a/b#password"`,
	} {
		if _, err := parse(t, text); err == nil || !strings.Contains(err.Error(), "rule") {
			t.Errorf("rules %q: %v, want an error naming the rule", text, err)
		}
	}
}

func TestContainerID(t *testing.T) {
	id := strings.Repeat("ab12", 16)
	for cg, want := range map[string]string{
		"/system.slice/docker-" + id + ".scope":                               id,
		"/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + id + ".scope": id,
		"/docker/" + id: id,
		"/machine.slice/libpod-" + id + ".scope/container": id,
		"/user.slice/user-1000.slice/session-2.scope":      "",
	} {
		if got := ContainerID(cg); got != want {
			t.Errorf("ContainerID(%q) = %q, want %q", cg, got, want)
		}
	}
}

func TestIdentitiesOfThisProcess(t *testing.T) {
	var ids Identities
	c := ids.Caller(uint32(os.Getpid()), 7, 8)
	exe, _ := os.Executable()
	if c.ExeErr != nil || c.Exe != exe || c.UID != 7 || c.GID != 8 {
		t.Errorf("Caller(self) = %+v; want exe %q", c, exe)
	}
	if !c.ExeHere || c.OtherMntNS || c.MntNS == 0 || c.ExeFile.Ino == 0 {
		t.Errorf("Caller(self): here %v, other namespace %v (%d), file %+v; want this file, in this namespace", c.ExeHere, c.OtherMntNS, c.MntNS, c.ExeFile)
	}
	if c.CgroupErr != nil && !strings.Contains(c.CgroupErr.Error(), "not mounted") || c.CgroupErr == nil && !strings.HasPrefix(c.Cgroup, "/") {
		t.Errorf("cgroup %q, %v", c.Cgroup, c.CgroupErr)
	}
	if again := ids.Caller(uint32(os.Getpid()), 9, 9); again.Exe != c.Exe || again.UID != 9 {
		t.Errorf("cached caller %+v", again)
	}
	if gone := ids.Caller(1<<30, 1, 1); gone.ExeErr == nil {
		t.Error("a process that does not exist: no error, want the caller denied")
	}
}

// A pid the kernel gives to a new process never inherits what was read of
// the old one: the cache is keyed by /proc/PID's inode, which procfs makes
// anew for each process.
func TestReusedPidIsReadAfresh(t *testing.T) {
	old := exec.Command("sleep", "60")
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	pid := old.Process.Pid
	var ids Identities
	first := ids.Caller(uint32(pid), 1, 1)
	old.Process.Kill()
	old.Wait()
	var reused *exec.Cmd
	for range 100 { // as root: the next pid is the old one
		if os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0) != nil {
			t.Skip("cannot choose the next pid here (needs root)")
		}
		c := exec.Command("true")
		c.Path = "/proc/self/exe" // another program than sleep
		c.Args = []string{"access.test", "-test.run", "^$", "-test.timeout", "60s"}
		c.Env = append(os.Environ(), "SECRETFS_TEST_SLEEP=1")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if c.Process.Pid == pid {
			reused = c
			break
		}
		c.Process.Kill()
		c.Wait()
	}
	if reused == nil {
		t.Skip("the pid was not reused")
	}
	defer func() { reused.Process.Kill(); reused.Wait() }()
	if second := ids.Caller(uint32(pid), 1, 1); second.Exe == first.Exe {
		t.Errorf("the new process at pid %d is taken for the old one: %q", pid, second.Exe)
	}
}

func TestMain(m *testing.M) {
	if os.Getenv("SECRETFS_TEST_SLEEP") != "" {
		time.Sleep(60 * time.Second)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
