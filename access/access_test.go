package access

import (
	"errors"
	"os"
	"strings"
	"testing"

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
	good := Caller{UID: 1000, GID: 5, Groups: []uint32{2000}, Exe: "/opt/x/bin/tool", Cgroup: "/system.slice/docker-3f9cabc.scope"}
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
	if c.CgroupErr != nil || !strings.HasPrefix(c.Cgroup, "/") {
		t.Errorf("cgroup %q, %v", c.Cgroup, c.CgroupErr)
	}
	if again := ids.Caller(uint32(os.Getpid()), 9, 9); again.Exe != c.Exe || again.UID != 9 {
		t.Errorf("cached caller %+v", again)
	}
	if gone := ids.Caller(1<<30, 1, 1); gone.ExeErr == nil {
		t.Error("a process that does not exist: no error, want the caller denied")
	}
}
