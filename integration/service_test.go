package integration

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSIGHUPNeverKills(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v"})
	d := testMount(t, b)
	for range 3 {
		d.cmd.Process.Signal(syscall.SIGHUP)
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case <-d.exited:
		t.Fatalf("SIGHUP killed the daemon: %v", d.err)
	default:
	}
	if got, err := os.ReadFile(d.Path("test", "k")); err != nil || string(got) != "v" {
		t.Errorf("after SIGHUP: %q, %v", got, err)
	}
}

func TestSIGQUITAndSIGINTUnmount(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGQUIT, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			b := newTestBackend(t, map[string]string{"k": "v"})
			dir := t.TempDir()
			d := startDaemon(t, dir, nil, "--providers", "test", "--test-dir", b.Dir)
			d.cmd.Process.Signal(sig)
			select {
			case <-d.exited:
			case <-time.After(10 * time.Second):
				d.kill()
				t.Fatalf("no exit after %v", sig)
			}
			if d.err != nil {
				t.Errorf("exit after %v: %v, want 0", sig, d.err)
			}
			if isMounted(dir) {
				syscall.Unmount(dir, syscall.MNT_DETACH)
				t.Errorf("%v left the mount behind", sig)
			}
		})
	}
}

// `secretfs mount DIR 2>&1 | head -1`: once head exits, logging must not
// take the mount down.
func TestBrokenLogPipeKeepsServing(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v"})
	dir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	mountpoints.Store(dir, true)
	cmd := exec.Command(secretfsBin, "mount", "--log-level", "debug", "--providers", "test", "--test-dir", b.Dir, dir)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
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
	line, err := bufio.NewReader(r).ReadString('\n') // head -1
	if err != nil {
		t.Fatalf("no first line: %v", err)
	}
	r.Close()
	t.Logf("head -1 read %q", strings.TrimSpace(line))
	eventually(t, 10*time.Second, "the mount is there", func() bool { return isMounted(dir) })
	for i := range 20 { // every read logs at debug level, into the broken pipe
		if _, err := os.ReadFile(filepath.Join(dir, "test", "k")); err != nil {
			t.Fatalf("read %d after the log pipe broke: %v", i, err)
		}
		os.Stat(filepath.Join(dir, "test", "missing-"+string(rune('a'+i))))
	}
	select {
	case err := <-exited:
		t.Fatalf("the daemon died when its log pipe broke: %v", err)
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if isMounted(dir) {
		t.Error("mount left behind")
	}
}

func TestSecondMountIsRefused(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v"})
	d := testMount(t, b)
	_, stderr, code := secretfs(t, nil, "mount", "--providers", "test", "--test-dir", b.Dir, d.Dir)
	if code == 0 || !strings.Contains(stderr, "mounted there already") {
		t.Errorf("a second mount on a live mountpoint: exit %d, %q; want a clear refusal", code, stderr)
	}
	if got, err := os.ReadFile(d.Path("test", "k")); err != nil || string(got) != "v" {
		t.Errorf("the first mount after the refused second: %q, %v", got, err)
	}
}

func TestStoppedDaemonDoesNotHangTheNextMount(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v"})
	d := testMount(t, b)
	d.cmd.Process.Signal(syscall.SIGSTOP)
	defer d.cmd.Process.Signal(syscall.SIGCONT)
	start := time.Now()
	_, stderr, code := secretfs(t, nil, "mount", "--providers", "test", "--test-dir", b.Dir, d.Dir)
	if code == 0 || !strings.Contains(stderr, "does not answer") {
		t.Errorf("mount on a stopped daemon's mountpoint: exit %d, %q; want a clear error", code, stderr)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("the check took %v", el)
	}
}

func TestConventionalAnswers(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"dir/k": "v"})
	d := testMount(t, b)
	var st syscall.Stat_t
	if err := syscall.Stat(d.Dir, &st); err != nil || st.Ino != 1 {
		t.Errorf("root st_ino = %d, %v; want 1", st.Ino, err)
	}
	for _, dir := range []string{d.Dir, d.Path("test"), d.Path("test", "dir")} {
		out, err := exec.Command("ls", "-a", dir).Output()
		if names := strings.Fields(string(out)); err != nil || len(names) < 2 || names[0] != "." || names[1] != ".." {
			t.Errorf("ls -a %s = %q, %v; want . and .. first", dir, names, err)
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(d.Dir, &fs); err != nil || fs.Bsize != 4096 || fs.Namelen != 255 {
		t.Errorf("statfs: bsize %d namelen %d, %v; want 4096 and 255", fs.Bsize, fs.Namelen, err)
	}
	_, err := os.Stat(d.Path("test", strings.Repeat("n", 256)))
	wantErrno(t, "a 256-byte name", err, syscall.ENAMETOOLONG)
	f, err := os.Open(d.Path("test", "dir", "k"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Errorf("fsync: %v, want success", err)
	}
}

func TestFlagsThatMakeNoUsableMount(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"mount", "--providers", "", dir},
		{"mount", "--dir-mode", "0400", dir},
	} {
		if _, stderr, code := secretfs(t, nil, args...); code != 2 || isMounted(dir) {
			t.Errorf("%v: exit %d (%q), want 2 and nothing mounted", args, code, stderr)
		}
	}
}

func TestConfigFileAndReload(t *testing.T) {
	t.Parallel()
	conf := filepath.Join(t.TempDir(), "secretfs.yaml")
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	write := func(text string) {
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("providers: [env]\nenv-allow: [SFS_CF_A]\nttl: 1h\naudit-log: " + audit + "\n")
	env := []string{"SFS_CF_A=a", "SFS_CF_B=b", "SECRETFS_TTL=30m"}
	d := mount(t, env, "--config", conf, "--negative-ttl", "100ms")
	if got := readDir(t, d.Path("env")); strings.Join(got, ",") != "SFS_CF_A" {
		t.Errorf("ls env = %q, want the file's env-allow", got)
	}
	d.waitLog(t, "ttl=30m0s", "SECRETFS_TTL wins over the file")

	// A good file: applied at once, what needs a restart is logged.
	write("providers: [env]\nenv-allow: [SFS_CF_A, SFS_CF_B]\nttl: 1h\naudit-log: " + audit + "\nfile-mode: \"0440\"\n")
	os.Rename(audit, audit+".1") // logrotate moves the old file away
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "the reload is logged", func() bool { return strings.Contains(d.Stderr(), "configuration reloaded") })
	eventually(t, 5*time.Second, "the new env-allow shows SFS_CF_B", func() bool {
		return strings.Join(readDir(t, d.Path("env")), ",") == "SFS_CF_A,SFS_CF_B"
	})
	d.waitLog(t, "need a restart", "the file-mode change needs a restart")
	d.waitLog(t, "--file-mode", "the file-mode change needs a restart")
	if got, err := os.ReadFile(d.Path("env", "SFS_CF_B")); err != nil || string(got) != "b" {
		t.Errorf("cat env/SFS_CF_B after the reload = %q, %v", got, err)
	}
	if data, err := os.ReadFile(audit); err != nil || !strings.Contains(string(data), "env:SFS_CF_B") {
		t.Errorf("the audit log was not reopened at its path: %q, %v", data, err)
	}

	// A bad file: rejected, logged, and the running configuration stays.
	write("providers: [env]\nenv-allow: [SFS_CF_A]\nttls: 1h\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "the rejection is logged", func() bool { return strings.Contains(d.Stderr(), "reload rejected") })
	if !strings.Contains(d.Stderr(), `unknown key \"ttls\"`) && !strings.Contains(d.Stderr(), `unknown key "ttls"`) {
		t.Errorf("the rejection does not name the unknown key:\n%s", d.Stderr())
	}
	if got := readDir(t, d.Path("env")); strings.Join(got, ",") != "SFS_CF_A,SFS_CF_B" {
		t.Errorf("after a bad file, ls env = %q; want the running configuration", got)
	}
	_, stderr, code := secretfs(t, nil, "get", "--config", conf, "env:SFS_CF_A")
	if code != 2 || !strings.Contains(stderr, "ttls") {
		t.Errorf("get with a bad config file: exit %d, %q; want a usage error naming the key", code, stderr)
	}
}

// metricsAddr returns where a daemon serves its metrics, from its log.
func metricsAddr(t *testing.T, d *daemon) string {
	t.Helper()
	var addr string
	eventually(t, 5*time.Second, "the metrics address is logged", func() bool {
		for line := range strings.Lines(d.Stderr()) {
			if i := strings.Index(line, `msg="serving metrics" addr=`); i >= 0 {
				addr = strings.TrimSpace(line[i+len(`msg="serving metrics" addr=`):])
				return true
			}
		}
		return false
	})
	return addr
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metricValue reads one sample, 0 when absent.
func metricValue(body, sample string) float64 {
	for line := range strings.Lines(body) {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}

func TestMetricsMoveAndNeverNameASecret(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"svc/metric-secret-name": "metric-secret-value"})
	d := mount(t, []string{"SFS_MET_KEY=metric-env-value"}, "--providers", "env,test", "--test-dir", b.Dir,
		"--env-allow", "SFS_MET_*", "--metrics-addr", "127.0.0.1:0")
	base := "http://" + metricsAddr(t, d)
	_, before := httpGet(t, base+"/metrics")
	for _, p := range []string{"test/svc/metric-secret-name", "env/SFS_MET_KEY"} {
		if _, err := os.ReadFile(d.Path(p)); err != nil {
			t.Fatal(err)
		}
	}
	os.Stat(d.Path("test", "svc", "missing-metric-name"))
	code, after := httpGet(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	moves := []string{
		`secretfs_backend_requests_total{provider="test",result="ok"}`,
		`secretfs_backend_requests_total{provider="env",result="ok"}`,
		`secretfs_backend_requests_total{provider="test",result="not_found"}`,
		`secretfs_fuse_requests_total{op="lookup"}`,
		"secretfs_cache_misses_total",
		"secretfs_cache_entries",
	}
	for _, s := range moves {
		if metricValue(after, s) <= metricValue(before, s) {
			t.Errorf("%s did not move: %v -> %v", s, metricValue(before, s), metricValue(after, s))
		}
	}
	for _, s := range []string{`secretfs_provider_up{provider="test"} 1`, "secretfs_build_info{", `secretfs_backend_request_duration_seconds_bucket{provider="test"`} {
		if !strings.Contains(after, s) {
			t.Errorf("/metrics lacks %s", s)
		}
	}
	for _, secret := range []string{"metric-secret-name", "metric-secret-value", "metric-env-value", "SFS_MET_KEY", "missing-metric-name", "svc/"} {
		if strings.Contains(after, secret) {
			t.Errorf("/metrics contains %q, a secret's name or value", secret)
		}
	}
	if code, body := httpGet(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
}

func TestSystemdNotify(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	want := func(what string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("the notify socket closed before %s", what)
				}
				if strings.Contains(m, what) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s on the notify socket", what)
			}
		}
	}
	b := newTestBackend(t, map[string]string{"k": "v"})
	dir := t.TempDir()
	d := startDaemon(t, dir, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}, "--providers", "test", "--test-dir", b.Dir)
	want("READY=1")
	want("WATCHDOG=1")
	want("WATCHDOG=1") // again: it keeps pinging while the mount answers
	d.cmd.Process.Signal(syscall.SIGHUP)
	want("STATUS=serving")
	if err := d.terminate(); err != nil {
		t.Errorf("exit: %v", err)
	}
	want("STOPPING=1")
}

func TestSystemdUnitVerifies(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, u := range []struct {
		name string
		need []string
	}{
		{"secretfs.service", []string{"Type=notify", "NoNewPrivileges=yes", "DeviceAllow=/dev/fuse", "RuntimeDirectory=secretfs", "CapabilityBoundingSet=CAP_SYS_ADMIN"}},
		// The volumes' mounts outlive a restart of the plugin.
		{"docker-volume-secretfs.service", []string{"Type=notify", "NoNewPrivileges=yes", "DeviceAllow=/dev/fuse", "KillMode=process",
			"CapabilityBoundingSet=CAP_SYS_ADMIN", "secretfs serve docker", "Requires=docker-volume-secretfs.socket", "Before=docker.service"}},
		{"docker-volume-secretfs.socket", []string{"ListenStream=/run/docker/plugins/secretfs.sock", "SocketMode=0660", "Before=docker.service"}},
	} {
		data, err := os.ReadFile(filepath.Join("../contrib/systemd", u.name))
		if err != nil {
			t.Fatal(err)
		}
		// No option that gives the service its own mount namespace: the
		// mount must propagate out.
		for _, bad := range []string{"ProtectSystem=", "ProtectHome=", "PrivateTmp=", "PrivateDevices=", "PrivateMounts=",
			"ReadOnlyPaths=", "ProtectKernelTunables=", "ProtectKernelModules=", "ProtectControlGroups=", "TemporaryFileSystem=", "BindPaths="} {
			for line := range strings.Lines(string(data)) {
				if strings.HasPrefix(strings.TrimSpace(line), bad) {
					t.Errorf("%s sets %s, which unshares the mount namespace", u.name, bad)
				}
			}
		}
		for _, need := range u.need {
			if !strings.Contains(string(data), need) {
				t.Errorf("%s lacks %s", u.name, need)
			}
		}
		// The units name the installed binary; verify them with the one
		// built here.
		if err := os.WriteFile(filepath.Join(dir, u.name), []byte(strings.ReplaceAll(string(data), "/usr/local/bin/secretfs", secretfsBin)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verify, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed here: the units were checked by their text only")
	}
	for _, name := range []string{"secretfs.service", "docker-volume-secretfs.service", "docker-volume-secretfs.socket"} {
		if out, err := exec.Command(verify, "verify", filepath.Join(dir, name)).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
	}
}

// daemonFor returns the pid of a secretfs process serving dir, or 0.
func daemonFor(dir string) int {
	if pids := daemonsWhere(func(mnt string) bool { return mnt == dir }); len(pids) > 0 {
		return pids[0]
	}
	return 0
}

// daemonsWhere returns the pids of the secretfs mount processes whose
// mountpoint match accepts.
func daemonsWhere(match func(mountpoint string) bool) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if len(args) > 2 && args[1] == "mount" && match(args[len(args)-1]) {
			pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
			pids = append(pids, pid)
		}
	}
	return pids
}

// The fstab route: mount(8) runs /sbin/mount.fuse.secretfs, a symlink to
// the binary, which daemonizes; umount stops the daemon.
func TestFstabMountAndUmount(t *testing.T) {
	t.Parallel()
	const helper = "/sbin/mount.fuse.secretfs"
	if target, err := os.Readlink(helper); err == nil {
		if target != secretfsBin {
			t.Skipf("%s is installed already (-> %s); not replacing it", helper, target)
		}
	} else {
		if err := os.Symlink(secretfsBin, helper); err != nil {
			t.Skipf("cannot install the helper %s: %v", helper, err)
		}
		t.Cleanup(func() { os.Remove(helper) })
	}
	b := newTestBackend(t, map[string]string{"k": "fstab-value"})
	dir := t.TempDir()
	cmd := exec.Command("mount", "-t", "fuse.secretfs", "secretfs", dir,
		"-o", "providers=env:test,test_dir="+b.Dir+",env_allow=SFS_FSTAB_*,file_mode=0440,ttl=1m,_netdev,nofail,x-systemd.automount")
	cmd.Env = append(os.Environ(), "SFS_FSTAB_X=from-env")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount -t fuse.secretfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if isMounted(dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	for p, want := range map[string]string{"test/k": "fstab-value", "env/SFS_FSTAB_X": "from-env"} {
		if got, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(got) != want {
			t.Errorf("cat %s = %q, %v; want %q", p, got, err, want)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "test", "k")); err != nil || st.Mode().Perm() != 0o440 {
		t.Errorf("file mode %v, %v; want 0440 from file_mode=0440", st.Mode(), err)
	}
	pid := daemonFor(dir)
	if pid == 0 {
		t.Fatal("no daemon serves the mount")
	}
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	eventually(t, 10*time.Second, "umount stops the daemon", func() bool { return syscall.Kill(pid, 0) != nil })
	if isMounted(dir) {
		t.Error("mount left behind after umount")
	}
	// A bad option fails the mount, with the reason.
	out, err := exec.Command("mount", "-t", "fuse.secretfs", "secretfs", dir, "-o", "no_such_option=1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no_such_option") {
		t.Errorf("mount with a bad option: %v, %q; want a failure naming it", err, out)
	}
}

func TestMakeInstall(t *testing.T) {
	t.Parallel()
	dest := t.TempDir()
	out, err := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest, "PREFIX=/usr").CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	if target, err := os.Readlink(filepath.Join(dest, "sbin", "mount.fuse.secretfs")); err != nil || target != "/usr/bin/secretfs" {
		t.Errorf("the helper: %q, %v; want a symlink to /usr/bin/secretfs", target, err)
	}
	if st, err := os.Stat(filepath.Join(dest, "usr", "bin", "secretfs")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("the binary: %v, %v", st, err)
	}
	unit, err := os.ReadFile(filepath.Join(dest, "usr", "lib", "systemd", "system", "secretfs.service"))
	if err != nil || !strings.Contains(string(unit), "ExecStart=/usr/bin/secretfs mount") {
		t.Errorf("the unit: %v; want ExecStart at the installed binary", err)
	}
}

func TestStatusAndRefresh(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "one", "dir/a": "a1", "dir/sub/b": "b1"})
	d := testMount(t, b, "--ttl", "1h")
	read := func(p string) string {
		got, err := os.ReadFile(d.Path("test", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(got)
	}
	read("k")
	read("dir/a")
	read("dir/sub/b")
	out, stderr, code := secretfs(t, nil, "status", d.Dir)
	if code != 0 {
		t.Fatalf("status: exit %d, %s", code, stderr)
	}
	for _, want := range []string{"mountpoint: " + d.Dir, "mode: fast", "provider test: up", "provider env: up", "uptime: ", "cache: "} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "one") || strings.Contains(out, "a1") {
		t.Errorf("status shows a value:\n%s", out)
	}

	b.write("k", "two")
	b.write("dir/a", "a2")
	b.write("dir/sub/b", "b2")
	if got := read("k"); got != "one" {
		t.Fatalf("before refresh, within the TTL: %q", got)
	}
	if out, stderr, code := secretfs(t, nil, "refresh", d.Dir, "test:k"); code != 0 {
		t.Fatalf("refresh: exit %d, %s %s", code, out, stderr)
	}
	if got := read("k"); got != "two" {
		t.Errorf("after refresh test:k: %q, want the new value at once", got)
	}
	if _, stderr, code := secretfs(t, nil, "refresh", d.Dir, "test:dir/"); code != 0 {
		t.Fatalf("refresh test:dir/: exit %d, %s", code, stderr)
	}
	if a, sub := read("dir/a"), read("dir/sub/b"); a != "a2" || sub != "b2" {
		t.Errorf("after refresh test:dir/: %q %q, want a2 b2", a, sub)
	}

	empty := t.TempDir()
	for _, args := range [][]string{{"status", empty}, {"refresh", empty, "test:k"}} {
		_, stderr, code := secretfs(t, nil, args...)
		if code != 1 || !strings.Contains(stderr, "no secretfs is mounted there") {
			t.Errorf("%v on no mount: exit %d, %q; want 1 and a clear message", args, code, stderr)
		}
	}
}

func TestGetAndLsEnableTheirProvider(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"app/k": "v", "app/h#f": "hidden"})
	// No --providers: the reference names the provider, and its flags apply.
	if out, stderr, code := secretfs(t, nil, "get", "--test-dir", b.Dir, "test:app/k"); code != 0 || out != "v" {
		t.Errorf("get test:app/k without --providers: %q, exit %d, %s", out, code, stderr)
	}
	if out, stderr, code := secretfs(t, nil, "ls", "--test-dir", b.Dir, "test:app"); code != 0 || out != "k\n" {
		t.Errorf("ls test:app = %q, exit %d, %s; want k only (h#f cannot be a path)", out, code, stderr)
	}
	if _, _, code := secretfs(t, nil, "ls", "--test-dir", b.Dir, "test:nope"); code != 3 {
		t.Errorf("ls of a missing directory: exit %d, want 3", code)
	}
}
