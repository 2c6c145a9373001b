package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/secretfs/secretfs/internal/bombs"
	"github.com/secretfs/secretfs/templates"
)

// These tests attack access rules and the audit trail as a local user
// would: a mount namespace of their own, a cgroup of their own, a template
// of a secret they may not read.

// copyProgram copies the program named to path, mode 0755.
func copyProgram(t *testing.T, name, path string) {
	t.Helper()
	src, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("no %s", name)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// publicDir is a directory every user may enter, removed at the end.
func publicDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// cgroupRoot is where cgroup v2 is mounted, if it is and may be written.
func cgroupRoot(t *testing.T) string {
	t.Helper()
	mounts, _ := os.ReadFile("/proc/mounts")
	for line := range strings.Lines(string(mounts)) {
		if f := strings.Fields(line); len(f) >= 3 && f[2] == "cgroup2" {
			return f[1]
		}
	}
	t.Skip("cgroup v2 is not mounted: cgroup rules are not tested here")
	return ""
}

// newCgroup makes a cgroup named name, removed at the end.
func newCgroup(t *testing.T, name string) string {
	t.Helper()
	cg := filepath.Join(cgroupRoot(t), name)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("cgroup v2 is not writable here (%v): cgroup rules are not tested", err)
	}
	t.Cleanup(func() {
		for range 100 {
			if os.Remove(cg) == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return cg
}

// canUnshareUser reports whether an unprivileged user may make a user and
// mount namespace here.
func canUnshareUser(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "unshare", "-Urm", "true").CombinedOutput(); err != nil {
		t.Skipf("unprivileged user namespaces are not available here (%v: %s)", err, out)
	}
}

// findRecord returns the first audit record with op for path.
func findRecord(t *testing.T, audit, op, path string) map[string]any {
	t.Helper()
	for _, rec := range auditRecords(t, audit) {
		if rec["op"] == op && rec["path"] == path {
			return rec
		}
	}
	t.Fatalf("no %s record of %s in %s", op, path, audit)
	return nil
}

// /proc/PID/exe is a path in the caller's own mount namespace: a user who
// mounted a tmpfs over the allowed program's directory in a namespace of
// their own, and put cat there under its name, read the secret, and the
// trail named the fake program.
func TestProgramInAMountNamespaceOfItsOwnIsDenied(t *testing.T) {
	t.Parallel()
	canUnshareUser(t)
	bin := publicDir(t, "secretfs-bin-")
	app := filepath.Join(bin, "myapp")
	copyProgram(t, "cat", app)
	cat, _ := exec.LookPath("cat")
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	b := newTestBackend(t, map[string]string{"app/key": "for-myapp"})
	d := rulesMount(t, b, fmt.Sprintf(`
rules:
  - path: "test/app/**"
    allow: {exe: [%q]}
`, app), "--allow-other", "--file-mode", "0444", "--dir-mode", "0555", "--audit-log", audit)
	p := d.Path("test", "app", "key")
	out, err := exec.Command("setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", app, p).CombinedOutput()
	if err != nil || string(out) != "for-myapp" {
		t.Fatalf("the allowed program: %q, %v", out, err)
	}
	script := fmt.Sprintf("mount -t tmpfs none %s && cp %s %s && exec %s %s", bin, cat, app, app, p)
	out, err = exec.Command("setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "unshare", "-Urm", "sh", "-c", script).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("cat named %s in a mount namespace of the user's own: %q, %v; want Permission denied", app, out, err)
	}
	rec := findRecord(t, audit, "denied", "test/app/key")
	if rec["other_mnt_ns"] != true || rec["mnt_ns"] == nil || rec["exe_dev"] == nil || rec["exe_ino"] == nil || !strings.Contains(fmt.Sprint(rec["reason"]), "another mount namespace") {
		t.Errorf("the denial record %v: want the namespace, the program's device and inode, and why", rec)
	}
	ok := findRecord(t, audit, "open", "test/app/key")
	var st syscall.Stat_t
	syscall.Stat(app, &st)
	if ok["other_mnt_ns"] != nil || ok["exe_ino"] != float64(st.Ino) {
		t.Errorf("the record of the allowed open %v: want this namespace and inode %d", ok, st.Ino)
	}
}

// On systemd hosts a user's user@UID.service subtree is delegated to
// them: they can make a cgroup named like a container. Here a cgroup
// chowned to the caller stands for one.
func TestDelegatedCgroupIsNoContainer(t *testing.T) {
	t.Parallel()
	id := "3f9c" + strings.Repeat("0", 56) + fmt.Sprintf("%04x", os.Getpid()&0xffff)
	cg := newCgroup(t, "docker-"+id+".scope")
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	b := newTestBackend(t, map[string]string{"pod/key": "for-the-pod", "rootless/key": "for-rootless"})
	d := rulesMount(t, b, `
rules:
  - path: "test/pod/**"
    allow: {cgroups: ["*docker-3f9c*"]}
  - path: "test/rootless/**"
    allow: {cgroups: ["*docker-3f9c*"], delegated: true}
`, "--allow-other", "--file-mode", "0444", "--dir-mode", "0555", "--audit-log", audit)
	read := func(p string) (string, error) {
		out, err := exec.Command("sh", "-c", "echo $$ > "+cg+"/cgroup.procs && exec setpriv --reuid 1000 --regid 1000 --clear-groups cat "+p).CombinedOutput()
		return string(out), err
	}
	// Made by root: where the caller runs, which it could not have chosen.
	if out, err := read(d.Path("test", "pod", "key")); err != nil || out != "for-the-pod" {
		t.Fatalf("in root's cgroup: %q, %v", out, err)
	}
	if rec := findRecord(t, audit, "open", "test/pod/key"); rec["container"] != id || rec["cgroup_delegated"] != nil {
		t.Errorf("record %v: want container %s", rec, id)
	}
	// Another uid's (a subuid the user maps, in a namespace of its own):
	// not the caller's, and still not root's alone.
	if err := os.Chown(cg, 100000, 100000); err != nil {
		t.Fatal(err)
	}
	if out, err := read(d.Path("test", "pod", "key")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("in a cgroup a subuid owns: %q, %v; want Permission denied", out, err)
	}
	// The caller's own.
	if err := os.Chown(cg, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if out, err := read(d.Path("test", "pod", "key")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("in a cgroup the caller owns: %q, %v; want Permission denied", out, err)
	}
	rec := findRecord(t, audit, "denied", "test/pod/key")
	if rec["container"] != nil || rec["cgroup_delegated"] != true || !strings.Contains(fmt.Sprint(rec["reason"]), "delegated") {
		t.Errorf("the denial record %v: want no container, the cgroup delegated, and why", rec)
	}
	if out, err := read(d.Path("test", "rootless", "key")); err != nil || out != "for-rootless" {
		t.Errorf("a rule with delegated: true: %q, %v; want it read", out, err)
	}
}

// A template that reads a secret only uid 1000 may read (mode 0400) was
// world-readable under --file-mode 0444: a way around the rule.
func TestTemplateIsNoLooserThanItsSecrets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	one := filepath.Join(dir, "one.tmpl")
	mixed := filepath.Join(dir, "mixed.tmpl")
	os.WriteFile(one, []byte(`v={{ secret "test:modeonly" }}`), 0o644)
	os.WriteFile(mixed, []byte(`{{ secret "test:modeonly" }}{{ secret "test:open" }}`), 0o644)
	widened := filepath.Join(dir, "widened.tmpl")
	os.WriteFile(widened, []byte(`{{ secret "test:modeonly" }}`), 0o644)
	b := newTestBackend(t, map[string]string{"modeonly": "only-1000", "open": "anyone"})
	d := rulesMount(t, b, `
rules:
  - path: "test/modeonly"
    uid: 1000
    mode: "0400"
  - path: "templates/widened"
    mode: "0444"
`, "--allow-other", "--file-mode", "0444", "--dir-mode", "0555",
		"--template", "one="+one, "--template", "mixed="+mixed, "--template", "widened="+widened)
	for _, tt := range []struct {
		path     string
		uid      int
		want     string // "" for Permission denied
		wantMode uint32
		wantUID  uint32
	}{
		{"test/modeonly", 2000, "", 0o400, 1000},
		{"templates/one", 2000, "", 0o400, 1000},
		{"templates/one", 1000, "v=only-1000", 0o400, 1000},
		{"templates/mixed", 1000, "", 0o400, uint32(os.Geteuid())}, // owners differ: secretfs's own
		{"templates/mixed", 0, "only-1000anyone", 0o400, uint32(os.Geteuid())},
		{"templates/widened", 2000, "only-1000", 0o444, 1000}, // its own rule grants more
	} {
		var st syscall.Stat_t
		if err := syscall.Stat(d.Path(tt.path), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o777 != tt.wantMode || st.Uid != tt.wantUID {
			t.Errorf("%s: mode %o owner %d; want %o and %d", tt.path, st.Mode&0o777, st.Uid, tt.wantMode, tt.wantUID)
		}
		out, err := as(tt.uid, tt.uid, "", d.Path(tt.path))
		if tt.want == "" && (err == nil || !strings.Contains(out, "Permission denied")) {
			t.Errorf("%s as %d: %q, %v; want Permission denied", tt.path, tt.uid, out, err)
		}
		if tt.want != "" && (err != nil || out != tt.want) {
			t.Errorf("%s as %d: %q, %v; want %q", tt.path, tt.uid, out, err, tt.want)
		}
	}
	d.waitLog(t, "template owned by secretfs's user", "a template of secrets of different owners")
	d.waitLog(t, "template widened beyond the secrets it reads", "a template whose own rule grants more")
}

// The README's worked example: one app, one container, one secret. The
// container is a mount namespace with its own /usr/local/bin and a cgroup
// named as docker names them.
func TestWorkedExample(t *testing.T) {
	t.Parallel()
	canUnshareUser(t)
	id := "3f9c0123" + strings.Repeat("0", 52) + fmt.Sprintf("%04x", (os.Getpid()+1)&0xffff)
	cg := newCgroup(t, "docker-"+id+".scope")
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	b := newTestBackend(t, map[string]string{"prod/db": `{"password":"hunter2"}`})
	config := `
allow-other: true
dir-mode: "0555"
audit-log: ` + audit + `
rules:
  - path: "test/prod/db"
    uid: 1000
    gid: 1000
    mode: "0400"
    allow:
      uids: [1000]
      exe: ["/usr/local/bin/myapp"]
      cgroups: ["*docker-3f9c*"]
`
	d := rulesMount(t, b, config)
	p := d.Path("test", "prod", "db#password")
	cat, _ := exec.LookPath("cat")
	// In the container: its own /usr/local/bin, its cgroup, uid 1000.
	inContainer := func(program string) (string, error) {
		script := fmt.Sprintf("mount -t tmpfs none /usr/local/bin && cp %s /usr/local/bin/myapp && echo $$ > %s/cgroup.procs && exec setpriv --reuid 1000 --regid 1000 --clear-groups %s %s", cat, cg, program, p)
		out, err := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script).CombinedOutput()
		return string(out), err
	}
	if out, err := inContainer("/usr/local/bin/myapp"); err != nil || out != "hunter2" {
		t.Errorf("myapp in the container: %q, %v; want the password", out, err)
	}
	if out, err := inContainer(cat); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("cat in the container: %q, %v; want Permission denied", out, err)
	}
	rec := findRecord(t, audit, "denied", "test/prod/db#password")
	if rec["rule"] != "1:test/prod/db" || rec["container"] != id || rec["uid"] != float64(1000) || !strings.Contains(fmt.Sprint(rec["reason"]), "matches none") {
		t.Errorf("the denial record %v: want the rule, the container, uid 1000 and why", rec)
	}
	// A user's fake myapp in a namespace of its own, outside the container.
	script := fmt.Sprintf("mount -t tmpfs none /usr/local/bin && cp %s /usr/local/bin/myapp && exec /usr/local/bin/myapp %s", cat, p)
	if out, err := exec.Command("setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "unshare", "-Urm", "sh", "-c", script).CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("a fake myapp outside the container: %q, %v; want Permission denied", out, err)
	}
	// check-access says the same as the README shows.
	conf := filepath.Join(t.TempDir(), "secretfs.yaml")
	os.WriteFile(conf, []byte(config), 0o600)
	out, stderr, code := secretfs(t, nil, "check-access", "--config", conf, "test/prod/db", "--uid", "1000",
		"--exe", "/usr/local/bin/myapp", "--container", "--cgroup", "/system.slice/docker-3f9c0123.scope")
	if code != 0 || !strings.Contains(out, "allowed by rule 1:test/prod/db") {
		t.Errorf("check-access: exit %d, %q (%s); want allowed by rule 1", code, out, stderr)
	}
}

// statAs runs stat on path as uid and returns the size it printed.
func statAs(uid int, path string) (string, error) {
	out, err := exec.Command("setpriv", "--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(uid), "--clear-groups", "stat", "-c", "%s", path).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Lookup fetched the value before any rule was checked: a caller an allow
// rule denies learned sizes (#admin is 4 bytes: true), which fields exist,
// and, through a template's size, comparisons. And one allowed lookup, kept
// by the kernel, answered the next caller's stat.
func TestDeniedCallerLearnsNothingFromStat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "cmp.tmpl")
	os.WriteFile(tmpl, []byte(`{{ if eq (secret "test:locked#admin") "true" }}yes{{ else }}no!{{ end }}`), 0o644)
	audit := filepath.Join(dir, "audit.jsonl")
	b := newTestBackend(t, map[string]string{"locked": `{"admin":"true","pin":"1234"}`, "open": "x"})
	d := rulesMount(t, b, `
rules:
  - path: "test/locked"
    allow: {uids: [4242]}
`, "--allow-other", "--file-mode", "0444", "--dir-mode", "0555", "--audit-log", audit, "--template", "cmp="+tmpl)
	for _, p := range []string{"test/locked", "test/locked#admin", "test/locked#nosuchfield", "templates/cmp"} {
		if out, err := statAs(1000, d.Path(p)); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("stat %s as a uid the rule denies: %q, %v; want Permission denied", p, out, err)
		}
	}
	// Allowed: the kernel keeps nothing for the next caller.
	if out, err := statAs(4242, d.Path("test/locked#admin")); err != nil || out != "4" {
		t.Fatalf("stat as the allowed uid: %q, %v; want 4", out, err)
	}
	if out, err := statAs(1000, d.Path("test/locked#admin")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("stat as a denied uid right after an allowed one: %q, %v; want Permission denied", out, err)
	}
	if out, err := statAs(1000, d.Path("test/open")); err != nil || out != "1" {
		t.Errorf("stat of a secret no rule guards: %q, %v", out, err)
	}
	denials := 0
	for _, rec := range auditRecords(t, audit) {
		if rec["op"] == "denied" && rec["uid"] == float64(1000) {
			denials++
			if rec["rule"] != "1:test/locked" || rec["reason"] == nil {
				t.Errorf("denial record %v: want the rule and why", rec)
			}
		}
	}
	if denials < 5 {
		t.Errorf("%d denial records, want one for each of the 5 denied stats", denials)
	}
}

// A template of KEY@VERSION took its owner and mode from KEY's rule, though
// a read of it serves the secret named exactly KEY@VERSION where one exists.
func TestTemplateOfAnExactVersionNameIsNoLooser(t *testing.T) {
	t.Parallel()
	tmpl := filepath.Join(t.TempDir(), "t.tmpl")
	os.WriteFile(tmpl, []byte(`{{ secret "test:faillist/db@v1" }}`), 0o644)
	b := newTestBackend(t, map[string]string{"faillist/db": "plain", "faillist/db@v1": "exact"})
	d := rulesMount(t, b, `
rules:
  - path: "test/faillist/db@v1"
    uid: 2000
    mode: "0400"
`, "--allow-other", "--file-mode", "0444", "--dir-mode", "0555", "--template", "t="+tmpl)
	if out, err := as(1000, 1000, "", d.Path("test", "faillist", "db@v1")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("db@v1 as uid 1000: %q, %v; want Permission denied", out, err)
	}
	if out, err := as(1000, 1000, "", d.Path("templates", "t")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("a template of db@v1 as uid 1000: %q, %v; want Permission denied", out, err)
	}
}

// A directory listing showed a denied caller the names of secrets an allow
// rule kept from it, and read them ahead.
func TestListingLeavesOutWhatACallerMayNotRead(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"app/k1": "a", "app/k2": "b", "app/open": "c"})
	d := rulesMount(t, b, `
rules:
  - path: "test/app/k*"
    allow: {uids: [4242]}
`, "--allow-other", "--file-mode", "0444", "--dir-mode", "0555")
	ls := func(uid int) string {
		out, err := exec.Command("setpriv", "--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(uid), "--clear-groups", "ls", d.Path("test", "app")).CombinedOutput()
		if err != nil {
			t.Fatalf("ls as %d: %v: %s", uid, err, out)
		}
		return strings.Join(strings.Fields(string(out)), ",")
	}
	if got := ls(1000); got != "open" {
		t.Errorf("ls as a denied uid = %q, want open only", got)
	}
	if got := ls(4242); got != "k1,k2,open" {
		t.Errorf("ls as the allowed uid = %q, want k1,k2,open", got)
	}
}

// Templates rendered in the daemon were bounded by a list of known bombs
// that every review added to. Renders now run in a worker process under
// rlimits and a deadline: every bomb ends within 5 s, failing (EIO) or
// with an output the size bound allows (fmt refuses a width past a
// million; a worker may hold 300 MB it never prints), and the daemon's
// peak memory stays under 320 MB. Four read at once, as many as renders
// may run: none waits for a slot, so each read is timed alone.
func TestTemplateBombsLeaveTheDaemonAlone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args := []string{"--env-allow", "NONE"}
	for i, text := range bombs.List {
		p := filepath.Join(dir, fmt.Sprintf("b%02d.tmpl", i))
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--template", fmt.Sprintf("b%02d=%s", i, p))
	}
	d := mount(t, nil, args...)
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowest time.Duration // guarded by mu
	for range templates.MaxRenders {
		wg.Go(func() {
			for i := range next {
				start := time.Now()
				out, err := os.ReadFile(d.Path("templates", fmt.Sprintf("b%02d", i)))
				el := time.Since(start)
				mu.Lock()
				slowest = max(slowest, el)
				mu.Unlock()
				if err != nil && !errors.Is(err, syscall.EIO) || len(out) > templates.MaxSize || el > 5*time.Second {
					t.Errorf("bomb %d (%.60s): %d bytes, %v after %v; want EIO or at most %d bytes, within 5 s", i, bombs.List[i], len(out), err, el, templates.MaxSize)
				}
			}
		})
	}
	for i := range bombs.List {
		next <- i
	}
	close(next)
	wg.Wait()
	if peak := procStatus(t, d.cmd.Process.Pid, "VmHWM"); peak > 320<<20 {
		t.Errorf("the daemon's peak RSS is %d MB, want under 320 MB", peak>>20)
	} else {
		t.Logf("the daemon's peak RSS: %d MB after %d bombs; the slowest took %v", peak>>20, len(bombs.List), slowest)
	}
}
