package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rulesMount mounts the test provider with config text (which the test's
// files go with) and the extra flags.
func rulesMount(t *testing.T, b *testBackend, config string, args ...string) *daemon {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "secretfs.yaml")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// A mountpoint other users can reach (t.TempDir's parents are 0700).
	dir, err := os.MkdirTemp("", "secretfs-rules-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.Remove(dir) })
	return mountAt(t, dir, nil, append([]string{"--providers", "env,test", "--test-dir", b.Dir, "--env-allow", "NONE", "--config", conf}, args...)...)
}

// auditRecords reads the JSON records of an audit file.
func auditRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for line := range bytes.Lines(data) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// as runs cat on path as uid and gid (and groups), and returns its output.
func as(uid, gid int, groups string, path string) (string, error) {
	args := []string{"--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(gid)}
	if groups == "" {
		args = append(args, "--clear-groups")
	} else {
		args = append(args, "--groups", groups)
	}
	out, err := exec.Command("setpriv", append(args, "cat", path)...).CombinedOutput()
	return string(out), err
}

func TestRulesSetOwnersAndModes(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"prod/db": "p", "prod/deep/x": "x", "dev/db": "d"})
	d := rulesMount(t, b, `
rules:
  - path: "test/prod/**"
    uid: 1000
    gid: 2000
    mode: "0440"
  - path: "test/dev/*"
    mode: "0444"
`)
	for p, want := range map[string][3]uint32{
		"test/prod/db": {1000, 2000, 0o440}, "test/prod/deep/x": {1000, 2000, 0o440},
		"test/dev/db": {uint32(os.Getuid()), uint32(os.Getgid()), 0o444},
	} {
		var st syscall.Stat_t
		if err := syscall.Stat(d.Path(p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != want[0] || st.Gid != want[1] || st.Mode&0o777 != want[2] {
			t.Errorf("%s: owner %d:%d mode %o; want %d:%d %o", p, st.Uid, st.Gid, st.Mode&0o777, want[0], want[1], want[2])
		}
	}
}

func TestAllowByUIDAndGID(t *testing.T) {
	t.Parallel()
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	b := newTestBackend(t, map[string]string{"uidonly": "for-1234", "gidonly": "for-4321", "open": "anyone"})
	d := rulesMount(t, b, `
rules:
  - path: "test/uidonly"
    allow: {uids: [1234]}
  - path: "test/gidonly"
    allow: {gids: [4321]}
`, "--allow-other", "--file-mode", "0444", "--dir-mode", "0555", "--audit-log", audit)
	tests := []struct {
		file       string
		uid, gid   int
		groups     string
		allowed    bool
		wantOutput string
	}{
		{"uidonly", 1234, 100, "", true, "for-1234"},
		{"uidonly", 1235, 100, "", false, ""},
		{"gidonly", 1235, 4321, "", true, "for-4321"},
		{"gidonly", 1235, 100, "4321", true, "for-4321"}, // a supplementary group
		{"gidonly", 1235, 100, "", false, ""},
		{"open", 1235, 100, "", true, "anyone"},
	}
	for _, tt := range tests {
		out, err := as(tt.uid, tt.gid, tt.groups, d.Path("test", tt.file))
		if tt.allowed && (err != nil || out != tt.wantOutput) {
			t.Errorf("%s as %d:%d (%s): %q, %v; want it read", tt.file, tt.uid, tt.gid, tt.groups, out, err)
		}
		if !tt.allowed && (err == nil || !strings.Contains(out, "Permission denied")) {
			t.Errorf("%s as %d:%d (%s): %q, %v; want Permission denied", tt.file, tt.uid, tt.gid, tt.groups, out, err)
		}
	}
	denials := 0
	for _, rec := range auditRecords(t, audit) {
		if rec["op"] == "denied" {
			denials++
			if rec["rule"] == nil || rec["reason"] == nil || rec["uid"] != float64(1235) || rec["exe"] == nil || rec["path"] == nil {
				t.Errorf("a denial record lacks rule, reason, uid, exe or path: %v", rec)
			}
		}
	}
	if denials != 2 {
		t.Errorf("%d denial records, want 2", denials)
	}
}

func TestAllowByProgram(t *testing.T) {
	t.Parallel()
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat")
	}
	real, _ := filepath.EvalSymlinks(cat)
	other := filepath.Join(t.TempDir(), "other-cat")
	data, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, data, 0o755); err != nil {
		t.Fatal(err)
	}
	b := newTestBackend(t, map[string]string{"app/key": "only-for-cat"})
	d := rulesMount(t, b, fmt.Sprintf(`
rules:
  - path: "test/app/**"
    allow: {exe: [%q]}
`, real))
	p := d.Path("test", "app", "key")
	if out, err := exec.Command(real, p).CombinedOutput(); err != nil || string(out) != "only-for-cat" {
		t.Errorf("the allowed program: %q, %v", out, err)
	}
	if out, err := exec.Command(other, p).CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("another program (the same bytes elsewhere): %q, %v; want Permission denied", out, err)
	}
	// Another name of the same secret is governed by the same rule.
	if out, err := exec.Command(other, d.Path("test", "app", "key@")).CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("another program through key@: %q, %v; want Permission denied", out, err)
	}
}

func TestAllowByCgroup(t *testing.T) {
	t.Parallel()
	// cgroup v2, where it is mounted (/sys/fs/cgroup, or .../unified on a
	// hybrid machine).
	root := ""
	mounts, _ := os.ReadFile("/proc/mounts")
	for line := range strings.Lines(string(mounts)) {
		if f := strings.Fields(line); len(f) >= 3 && f[2] == "cgroup2" {
			root = f[1]
			break
		}
	}
	if root == "" {
		t.Skip("cgroup v2 is not mounted: allow by cgroup is not tested here")
	}
	name := fmt.Sprintf("secretfs-it-%d", os.Getpid())
	cg := filepath.Join(root, name)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("cgroup v2 is not writable here (%v): allow by cgroup is not tested", err)
	}
	t.Cleanup(func() {
		for range 50 {
			if os.Remove(cg) == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	b := newTestBackend(t, map[string]string{"pod/key": "for-the-pod"})
	d := rulesMount(t, b, `
rules:
  - path: "test/pod/**"
    allow: {cgroups: ["*/`+name+`"]}
`)
	p := d.Path("test", "pod", "key")
	out, err := exec.Command("sh", "-c", "echo $$ > "+cg+"/cgroup.procs && exec cat "+p).CombinedOutput()
	if err != nil || string(out) != "for-the-pod" {
		t.Errorf("a reader in the cgroup: %q, %v", out, err)
	}
	if out, err := exec.Command("cat", p).CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("a reader outside the cgroup: %q, %v; want Permission denied", out, err)
	}
}

func TestAuditFailsClosed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	audit := filepath.Join(dir, "audit.jsonl")
	b := newTestBackend(t, map[string]string{"k": "v"})
	d := testMount(t, b, "--audit-log", audit, "--metrics-addr", "127.0.0.1:0")
	if _, err := os.ReadFile(d.Path("test", "k")); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break // full
		}
	}
	f.Close()
	// The audit file's last page may take a few more records; then none.
	var lastErr error
	for range 100 {
		if _, lastErr = os.ReadFile(d.Path("test", "k")); lastErr != nil {
			break
		}
	}
	wantErrno(t, "a read whose audit record cannot be written", lastErr, syscall.EIO)
	_, body := httpGet(t, "http://"+metricsAddr(t, d)+"/metrics")
	if metricValue(body, "secretfs_audit_write_failures_total") < 1 {
		t.Errorf("secretfs_audit_write_failures_total did not count the failure")
	}
	d.waitLog(t, "fail closed", "the failure was not logged")
	os.Remove(filler)
	if got, err := os.ReadFile(d.Path("test", "k")); err != nil || string(got) != "v" {
		t.Errorf("once space returns: %q, %v; want the read served again", got, err)
	}
}

func TestAuditRecordsRejectedNamesAndReadAhead(t *testing.T) {
	t.Parallel()
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	b := newTestBackend(t, map[string]string{"dir/a": "1", "dir/b": "2"})
	d := testMount(t, b, "--audit-log", audit)
	for _, name := range []string{"FOO#", "@", "x#", "bad\xffname"} {
		os.Stat(d.Path("test", name))
	}
	readDir(t, d.Path("test", "dir"))
	var rejected, readahead int
	for _, rec := range auditRecords(t, audit) {
		if rec["result"] == "invalid name" {
			rejected++
		}
		if rec["op"] == "readdir" && fmt.Sprint(rec["refs"]) == "[test:dir/a test:dir/b]" {
			readahead++
		}
		if p, _ := rec["path"].(string); strings.Contains(p, "bad") && p != `test/bad\xffname` && p != "test/bad\\xffname" {
			t.Errorf("an invalid UTF-8 name was recorded as %q, want it escaped", p)
		}
	}
	if rejected < 3 || readahead != 1 {
		t.Errorf("records: %d of rejected names (want the 3 the grammar rejects), %d of the directory read ahead (want 1)", rejected, readahead)
	}
	data, _ := os.ReadFile(audit)
	if !bytes.Contains(data, []byte(`bad\\xffname`)) {
		t.Errorf("the invalid UTF-8 name is not escaped as \\xff in the trail:\n%s", data)
	}
}

func TestCheckAccess(t *testing.T) { // not parallel: it sets SECRETFS_UID
	dir := t.TempDir()
	conf := filepath.Join(dir, "secretfs.yaml")
	tmpl := filepath.Join(dir, "t1.tmpl")
	os.WriteFile(tmpl, []byte(`{{ secret "aws:prod/db#password" }}`), 0o600)
	app := filepath.Join(dir, "myapp")
	copyProgram(t, "true", app)
	// Keys only mount knows are fine here, and neither the file's uid nor
	// SECRETFS_UID is taken for the caller's.
	os.WriteFile(conf, []byte(`
allow-other: true
audit-log: /var/log/secretfs/audit.jsonl
uid: 1000
file-mode: "0444"
dir-mode: "0555"
templates:
  - name: t1
    source: `+tmpl+`
rules:
  - path: "aws/prod/**"
    mode: "0440"
    allow: {uids: [1000], exe: ["/usr/local/bin/myapp"], cgroups: ["*docker-3f9c*"]}
  - path: "aws/here/**"
    allow: {exe: [`+fmt.Sprintf("%q", app)+`]}
`), 0o600)
	t.Setenv("SECRETFS_UID", "1000")
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"aws/prod/db", "--uid", "1000", "--exe", "/usr/local/bin/myapp", "--container", "--cgroup", "/system.slice/docker-3f9c.scope"}, 0, "allowed by rule 1:aws/prod/**"},
		{[]string{"aws/prod/db@AWSPREVIOUS#password", "--uid", "1000", "--exe", "/usr/local/bin/myapp", "--container", "--cgroup", "/system.slice/docker-3f9c.scope"}, 0, "allowed by rule 1:aws/prod/**"},
		{[]string{"aws/prod/db", "--uid", "1001", "--exe", "/usr/local/bin/myapp", "--container", "--cgroup", "/system.slice/docker-3f9c.scope"}, 5, "uid 1001 is not in [1000]"},
		{[]string{"aws/prod/db", "--uid", "1000", "--exe", "/usr/bin/cat", "--cgroup", "/system.slice/docker-3f9c.scope"}, 5, `executable "/usr/bin/cat"`},
		{[]string{"aws/prod/db", "--uid", "1000", "--exe", "/usr/local/bin/myapp", "--container", "--cgroup", "/user.slice"}, 5, `cgroup "/user.slice"`},
		{[]string{"aws/prod/db", "--uid", "1000"}, 5, "cannot be read"},
		{[]string{"env/HOME", "--uid", "1000"}, 0, "no rule matches"},
		{[]string{"aws/prod/db"}, 2, ""},
		// A program here is the file at its path; a container's, only with cgroups.
		{[]string{"aws/here/x", "--uid", "5", "--exe", app}, 0, "allowed by rule 2"},
		{[]string{"aws/here/x", "--uid", "5", "--exe", app, "--container"}, 5, "another mount namespace"},
		{[]string{"aws/here/x", "--uid", "5", "--exe", filepath.Join(dir, "gone")}, 5, "matches none"},
		// A template is decided by the rules of the secrets it reads, as the
		// mount decides, and has no looser mode than they have.
		{[]string{"templates/t1", "--uid", "1001", "--exe", "/usr/local/bin/myapp", "--container", "--cgroup", "/system.slice/docker-3f9c.scope"}, 5, "uid 1001 is not in [1000]"},
		{[]string{"templates/t1", "--uid", "1000", "--exe", "/usr/local/bin/myapp", "--container", "--cgroup", "/system.slice/docker-3f9c.scope"}, 0, "mode 0440"},
		{[]string{"templates/t2", "--uid", "1000"}, 2, ""},
		// Owners and modes: with allow-other the kernel checks them.
		{[]string{"env/HOME", "--uid", "1001"}, 0, "mode 0444"},
		{[]string{"aws/prod/db", "--uid", "1000", "--gid", "7", "--exe", "/usr/local/bin/myapp", "--container", "--cgroup", "/system.slice/docker-3f9c.scope"}, 0, "owner 1000:0"},
		// A cgroup in a delegated subtree is not where a container runs.
		{[]string{"aws/prod/db", "--uid", "1000", "--exe", "/usr/local/bin/myapp", "--container", "--cgroup", "/system.slice/docker-3f9c.scope", "--delegated"}, 5, "delegated"},
		// An absolute path is a path on the system: below no mount, refused.
		{[]string{"/mnt/secrets/aws/prod/db", "--uid", "1000"}, 2, ""},
	}
	for _, tt := range tests {
		out, stderr, code := secretfs(t, nil, append([]string{"check-access", "--config", conf}, tt.args...)...)
		if code != tt.wantCode || !strings.Contains(out, tt.want) {
			t.Errorf("check-access %v: exit %d, %q (%s); want %d and %q", tt.args, code, out, stderr, tt.wantCode, tt.want)
		}
	}
	// Directories the caller may not enter, and a mount without allow-other.
	os.WriteFile(conf, []byte("allow-other: true\nfile-mode: \"0444\"\n"), 0o600)
	if out, _, code := secretfs(t, nil, "check-access", "--config", conf, "env/HOME", "--uid", "1001"); code != 5 || !strings.Contains(out, "directories") {
		t.Errorf("behind directories of mode 0500: exit %d, %q; want denied by the directories' mode", code, out)
	}
	os.WriteFile(conf, []byte("file-mode: \"0444\"\n"), 0o600)
	if out, _, code := secretfs(t, nil, "check-access", "--config", conf, "env/HOME", "--uid", "1000"); code != 5 || !strings.Contains(out, "allow-other") {
		t.Errorf("without allow-other: exit %d, %q; want denied, only the mounting user enters", code, out)
	}
	os.WriteFile(conf, []byte("rules:\n  - path: \"a\"\n    mode: \"999\"\n"), 0o600)
	if _, stderr, code := secretfs(t, nil, "check-access", "--config", conf, "a", "--uid", "0"); code != 2 || !strings.Contains(stderr, "rule 1") {
		t.Errorf("a bad rule: exit %d, %q; want a usage error naming the rule", code, stderr)
	}
}

// check-access allowed templates/t1 that the mount denied, and read an
// absolute path as one below the mount.
func TestCheckAccessAgreesWithTheMount(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "t1.tmpl")
	os.WriteFile(tmpl, []byte(`{{ secret "test:locked" }}`), 0o644)
	text := `
allow-other: true
file-mode: "0444"
dir-mode: "0555"
templates:
  - name: t1
    source: ` + tmpl + `
rules:
  - path: "test/locked"
    allow: {uids: [4242]}
  - path: "test/owned"
    uid: 1000
    mode: "0400"
`
	b := newTestBackend(t, map[string]string{"locked": "x", "owned": "y", "open": "z"})
	d := rulesMount(t, b, text)
	conf := filepath.Join(dir, "secretfs.yaml")
	os.WriteFile(conf, []byte(text), 0o600)
	for _, tt := range []struct {
		path string
		uid  int
	}{
		{"templates/t1", 1000}, {"templates/t1", 4242}, {"test/locked", 1000}, {"test/owned", 1000}, {"test/owned", 2000}, {"test/open", 2000},
	} {
		_, err := as(tt.uid, tt.uid, "", d.Path(tt.path))
		catExe, _ := exec.LookPath("cat")
		catExe, _ = filepath.EvalSymlinks(catExe)
		for _, p := range []string{tt.path, d.Path(tt.path)} {
			out, stderr, code := secretfs(t, nil, "check-access", "--config", conf, p, "--uid", strconv.Itoa(tt.uid), "--gid", strconv.Itoa(tt.uid), "--exe", catExe)
			if mountSays, checkSays := err == nil, code == 0; mountSays != checkSays || code != 0 && code != 5 {
				t.Errorf("%s as %d: the mount says allowed=%v (%v); check-access %s exits %d: %s%s", tt.path, tt.uid, mountSays, err, p, code, out, stderr)
			}
		}
	}
}

func TestMlock(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v"})
	d := testMount(t, b, "--mlock")
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmLck:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(v)[0])
			if kb <= 0 {
				t.Errorf("VmLck = %s with --mlock, want > 0", strings.TrimSpace(v))
			}
			out, _, _ := secretfs(t, nil, "status", d.Dir)
			if !strings.Contains(out, "locked memory: "+strings.TrimSpace(v)) && !strings.Contains(out, "locked memory: ") {
				t.Errorf("status does not report the locked memory:\n%s", out)
			}
			return
		}
	}
	t.Error("no VmLck in /proc/PID/status")
}

// A daemon that runs as an ordinary user is not dumpable: a peer of the
// same uid can neither ptrace it nor read its environment, and it writes no
// core file.
func TestNonRootDaemonIsNotDumpable(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("fusermount3 (Debian package fuse3) is not installed: a non-root mount is not tested here")
	}
	// /dev/fuse is 0600 here: let the user open it for this test, then put
	// it back.
	st, err := os.Stat("/dev/fuse")
	if err != nil {
		t.Skip("no /dev/fuse")
	}
	if st.Mode().Perm()&0o006 != 0o006 {
		if err := os.Chmod("/dev/fuse", 0o666); err != nil {
			t.Skipf("cannot open /dev/fuse to other users: %v", err)
		}
		t.Cleanup(func() { os.Chmod("/dev/fuse", st.Mode().Perm()) })
	}
	const uid = 1000
	shared, err := os.MkdirTemp("", "secretfs-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	os.Chmod(shared, 0o755)
	bin := filepath.Join(shared, "secretfs")
	data, err := os.ReadFile(secretfsBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(shared, "mnt")
	os.Mkdir(dir, 0o755)
	os.Chown(dir, uid, uid)
	mountpoints.Store(dir, true)
	cmd := exec.Command("setpriv", "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid), "--clear-groups",
		bin, "mount", "--providers", "env", "--env-allow", "SFS_ND_*", dir)
	cmd.Env = append(os.Environ(), "SFS_ND_SECRET=not-for-peers", "XDG_RUNTIME_DIR=")
	var stderrMu sync.Mutex
	var stderrBuf bytes.Buffer
	cmd.Stderr = lockedWriter{&stderrMu, &stderrBuf}
	stderr := func() string { stderrMu.Lock(); defer stderrMu.Unlock(); return stderrBuf.String() }
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		if isMounted(dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	line := make([]byte, 256)
	n, _ := stdout.Read(line)
	if !strings.Contains(string(line[:n]), "mounted") {
		t.Fatalf("the user's daemon did not mount: %q\n%s", line[:n], stderr())
	}
	if out, err := exec.Command("setpriv", "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid), "--clear-groups",
		"cat", filepath.Join(dir, "env", "SFS_ND_SECRET")).CombinedOutput(); err != nil || string(out) != "not-for-peers" {
		t.Errorf("the user reads its own mount: %q, %v", out, err)
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	out, err := exec.Command("setpriv", "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid), "--clear-groups",
		"cat", "/proc/"+pid+"/environ").CombinedOutput()
	if err == nil || strings.Contains(string(out), "not-for-peers") {
		t.Errorf("a peer of the same uid read the daemon's environment: %v, %q", err, out)
	}
	limits, _ := os.ReadFile("/proc/" + pid + "/limits")
	for l := range strings.Lines(string(limits)) {
		if strings.HasPrefix(l, "Max core file size") && !strings.Contains(l, " 0 ") {
			t.Errorf("core files are possible: %s", strings.TrimSpace(l))
		}
	}
	if !strings.Contains(stderr(), "control socket") {
		t.Errorf("a user without XDG_RUNTIME_DIR: the missing control socket was not logged:\n%s", stderr())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("the user's daemon after SIGTERM: %v\n%s", waitErr, stderr())
		}
	case <-time.After(10 * time.Second):
		t.Error("the user's daemon did not exit after SIGTERM")
	}
	if isMounted(dir) {
		t.Error("the user's mount was left behind")
	}
}

func TestRulesReload(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v", "m": "w"})
	conf := filepath.Join(t.TempDir(), "secretfs.yaml")
	write := func(text string) {
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Audit mode (an allow rule at start): rules change on SIGHUP.
	write("rules:\n  - path: \"test/k\"\n    mode: \"0440\"\n    allow: {uids: [0]}\n  - path: \"test/m\"\n    mode: \"0440\"\n")
	d := testMount(t, b, "--config", conf, "--ttl", "1h")
	if got, err := os.ReadFile(d.Path("test", "k")); err != nil || string(got) != "v" {
		t.Fatalf("root, allowed: %q, %v", got, err)
	}
	write("rules:\n  - path: \"test/k\"\n    mode: \"0444\"\n    allow: {uids: [1234]}\n  - path: \"test/m\"\n    mode: \"0444\"\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "the new rules apply", func() bool {
		_, err := os.ReadFile(d.Path("test", "k"))
		return errors.Is(err, syscall.EACCES)
	})
	if _, err := os.Stat(d.Path("test", "k")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("stat of a secret the new rules deny: %v, want EACCES", err)
	}
	eventually(t, 5*time.Second, "the new mode shows", func() bool {
		st, err := os.Stat(d.Path("test", "m"))
		return err == nil && st.Mode().Perm() == 0o444
	})
	// A bad rule on reload: rejected, the running rules stay.
	write("rules:\n  - path: \"/abs\"\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "the bad rule is rejected", func() bool { return strings.Contains(d.Stderr(), "reload rejected") })
	if _, err := os.ReadFile(d.Path("test", "k")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("after a rejected reload: %v, want the running rules (EACCES)", err)
	}

	// The fast mode (no allow rule, no audit log at start) cannot take an
	// allow rule: the old rules stay until a restart.
	conf2 := filepath.Join(t.TempDir(), "fast.yaml")
	os.WriteFile(conf2, []byte("rules:\n  - path: \"test/k\"\n    mode: \"0440\"\n"), 0o600)
	fast := testMount(t, b, "--config", conf2)
	os.WriteFile(conf2, []byte("rules:\n  - path: \"test/k\"\n    allow: {uids: [1234]}\n"), 0o600)
	fast.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "the restart is logged", func() bool { return strings.Contains(fast.Stderr(), "need a restart") })
	if got, err := os.ReadFile(fast.Path("test", "k")); err != nil || string(got) != "v" {
		t.Errorf("a fast-mode mount after an allow rule was added: %q, %v; want the old rules", got, err)
	}
	// A bad rule at start is a usage error.
	os.WriteFile(conf2, []byte("rules:\n  - path: \"a\"\n    nope: 1\n"), 0o600)
	if _, stderr, code := secretfs(t, nil, "mount", "--providers", "test", "--test-dir", b.Dir, "--config", conf2, t.TempDir()); code != 2 || !strings.Contains(stderr, "nope") {
		t.Errorf("a bad rule at start: exit %d, %q; want 2 naming the key", code, stderr)
	}
}

// Rules are matched on the secret actually served: for db@v1 in a
// directory that cannot be listed, the resolver reads the secret named
// exactly db@v1, and its rule, not db's, decides.
func TestRulesMatchTheSecretServed(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"faillist/db": "plain", "faillist/db@v1": "exact"})
	d := rulesMount(t, b, `
rules:
  - path: "test/faillist/db@v1"
    mode: "0440"
  - path: "test/faillist/db"
    mode: "0400"
`)
	for name, want := range map[string]struct {
		value string
		mode  uint32
	}{"db@v1": {"exact", 0o440}, "db": {"plain", 0o400}} {
		p := d.Path("test", "faillist", name)
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want.value {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want.value)
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil || st.Mode&0o777 != want.mode {
			t.Errorf("%s: mode %o, %v; want %o (the rule of the secret served)", name, st.Mode&0o777, err, want.mode)
		}
	}
}

// A template is no way around the rule of the secret it was actually
// served: reading db@v1 through a template is refused as reading it is.
func TestTemplateFollowsTheRuleOfTheSecretServed(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"faillist/db": "plain", "faillist/db@v1": "exact"})
	tmpl := filepath.Join(t.TempDir(), "t.tmpl")
	os.WriteFile(tmpl, []byte(`{{ secret "test:faillist/db@v1" }}`), 0o600)
	d := rulesMount(t, b, `
rules:
  - path: "test/faillist/db@v1"
    allow:
      uids: [4242]
`, "--template", "t="+tmpl)
	_, err := os.ReadFile(d.Path("test", "faillist", "db@v1"))
	wantErrno(t, "db@v1 for a uid the rule does not allow", err, syscall.EACCES)
	_, err = os.ReadFile(d.Path("templates", "t"))
	wantErrno(t, "a template of db@v1 for a uid the rule does not allow", err, syscall.EACCES)
}
