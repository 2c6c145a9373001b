package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// plugin is a running `secretfs serve docker`.
type plugin struct {
	t     *testing.T
	dir   string // state, base and log below it
	sock  string
	wrap  []string // runs the plugin (nsenter into an engine's mount namespace)
	args  []string
	cmd   *exec.Cmd
	log   pluginLog
	httpc *http.Client
}

// pluginLog is the plugin's stderr: a file, as the volumes' mounts, which
// outlive the plugin, inherit it (a pipe would keep Wait waiting on them).
type pluginLog struct{ path string }

func (l pluginLog) String() string {
	b, _ := os.ReadFile(l.path)
	return string(b)
}

func (p *plugin) socket() string { return p.sock }
func (p *plugin) base() string   { return filepath.Join(p.dir, "base") }

// startPlugin starts the plugin with the state kept in dir, and waits for
// its socket.
func startPlugin(t *testing.T, dir string, args ...string) *plugin {
	t.Helper()
	return startPluginAt(t, dir, filepath.Join(dir, "plugin.sock"), nil, args...)
}

func startPluginAt(t *testing.T, dir, sock string, wrap []string, args ...string) *plugin {
	t.Helper()
	p := &plugin{t: t, dir: dir, sock: sock, wrap: wrap, args: args, log: pluginLog{filepath.Join(dir, "plugin.log")}}
	p.httpc = &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", p.socket())
		}}}
	p.start()
	return p
}

func (p *plugin) start() {
	t := p.t
	t.Helper()
	full := append([]string{"serve", "docker", "--socket-addr", p.socket(), "--base-dir", p.base(),
		"--state-file", filepath.Join(p.dir, "state"), "--log-level", "debug"}, p.args...)
	p.cmd = exec.Command(secretfsBin, full...)
	if len(p.wrap) > 0 {
		p.cmd = exec.Command(p.wrap[0], append(append(p.wrap[1:len(p.wrap):len(p.wrap)], secretfsBin), full...)...)
	}
	logf, err := os.OpenFile(p.log.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd.Stderr = logf
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err = p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.Contains(line, "serving docker volumes")
		io.Copy(io.Discard, out)
	}()
	select {
	case ok := <-ready:
		if !ok {
			p.cmd.Wait()
			t.Fatalf("the plugin did not start:\n%s", p.log)
		}
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("the plugin is not ready after 20s:\n%s", p.log)
	}
}

// kill kills the plugin as a crash would.
func (p *plugin) kill() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// call posts a request of Docker's volume protocol and returns the answer,
// failing the test on an Err unless wantErr.
func (p *plugin) call(method string, req any) map[string]any {
	p.t.Helper()
	body, _ := json.Marshal(req)
	resp, err := p.httpc.Post("http://plugin/"+method, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		p.t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		p.t.Fatalf("%s: %v", method, err)
	}
	return out
}

func (p *plugin) ok(method string, req any) map[string]any {
	p.t.Helper()
	out := p.call(method, req)
	if e, _ := out["Err"].(string); e != "" {
		p.t.Fatalf("%s %v: Err %q\n%s", method, req, e, p.log)
	}
	if mp, ok := out["Mountpoint"].(string); ok && mp != "" {
		mountpoints.Store(mp, true) // the suite fails on one left mounted
	}
	return out
}

func (p *plugin) refused(method string, req any, want string) {
	p.t.Helper()
	out := p.call(method, req)
	if e, _ := out["Err"].(string); !strings.Contains(e, want) {
		p.t.Errorf("%s %v: Err %q, want one with %q", method, req, e, want)
	}
}

// cleanup unmounts what a test left below the plugin's base.
func (p *plugin) cleanup() {
	if p.cmd.ProcessState == nil {
		p.kill()
	}
	ents, _ := os.ReadDir(p.base())
	for _, e := range ents {
		dir := filepath.Join(p.base(), e.Name())
		if isMounted(dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	}
}

// The protocol as dockerd speaks it on the socket: one mount per volume
// however many containers use it, the last Unmount unmounts, a volume in
// use stays, bad options and the env provider are refused at Create.
func TestDockerPluginProtocol(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"app/db": "db-secret", "other/x": "x-secret"})
	dir := t.TempDir()
	confDir, auditDir := filepath.Join(dir, "conf"), filepath.Join(dir, "audit")
	os.MkdirAll(confDir, 0o755)
	os.MkdirAll(auditDir, 0o700)
	os.WriteFile(filepath.Join(confDir, "rules.yaml"), []byte("rules:\n  - path: test/other/**\n    mode: \"0400\"\n    uid: 2000\n"), 0o644)
	p := startPlugin(t, dir, "--providers", "test", "--test-dir", b.Dir, "--config-dir", confDir, "--audit-dir", auditDir)
	t.Cleanup(p.cleanup)

	if got := p.ok("Plugin.Activate", nil); fmt.Sprint(got["Implements"]) != "[VolumeDriver]" {
		t.Errorf("Activate = %v", got)
	}
	if got := p.ok("VolumeDriver.Capabilities", nil); fmt.Sprint(got["Capabilities"]) != "map[Scope:local]" {
		t.Errorf("Capabilities = %v", got)
	}
	p.refused("VolumeDriver.Create", map[string]any{"Name": "bad", "Opts": map[string]string{"audit_log": "/etc/passwd"}}, "audit_log is not offered to volumes")
	p.refused("VolumeDriver.Create", map[string]any{"Name": "bad", "Opts": map[string]string{"colour": "blue"}}, `unknown option "colour"`)
	p.refused("VolumeDriver.Create", map[string]any{"Name": "envvol", "Opts": map[string]string{"providers": "env"}}, "--allow-env")
	p.refused("VolumeDriver.Mount", map[string]any{"Name": "nope", "ID": "x"}, "no volume")

	p.ok("VolumeDriver.Create", map[string]any{"Name": "app", "Opts": map[string]string{"uid": "1000", "file_mode": "0440", "config": "rules.yaml"}})
	if got := p.ok("VolumeDriver.Path", map[string]any{"Name": "app"}); got["Mountpoint"] != "" && got["Mountpoint"] != nil {
		t.Errorf("Path before any Mount = %v, want none", got["Mountpoint"])
	}
	start := time.Now()
	mp, _ := p.ok("VolumeDriver.Mount", map[string]any{"Name": "app", "ID": "c1"})["Mountpoint"].(string)
	t.Logf("Mount took %v", time.Since(start))
	if got, err := os.ReadFile(filepath.Join(mp, "test", "app", "db")); err != nil || string(got) != "db-secret" {
		t.Fatalf("read through the volume: %q, %v", got, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mp, "test", "app", "db"), &st); err != nil || st.Uid != 1000 || st.Mode&0o777 != 0o440 {
		t.Errorf("the file: uid %d mode %o, %v; want the volume's uid=1000 file_mode=0440", st.Uid, st.Mode&0o777, err)
	}
	// The volume's rules (its config file from --config-dir) and its own
	// audit trail.
	if err := syscall.Stat(filepath.Join(mp, "test", "other", "x"), &st); err != nil || st.Uid != 2000 || st.Mode&0o777 != 0o400 {
		t.Errorf("a file under the volume's rule: uid %d mode %o, %v; want 2000 0400", st.Uid, st.Mode&0o777, err)
	}
	if rec, err := os.ReadFile(filepath.Join(auditDir, "app.jsonl")); err != nil || !strings.Contains(string(rec), `"ref":"test:app/db"`) || strings.Contains(string(rec), "db-secret") {
		t.Errorf("the volume's audit trail: %q, %v; want the read of test:app/db, never its value", rec, err)
	}
	t.Logf("a mounted volume's process: %d MB resident", procStatus(t, mustDaemonFor(t, mp), "VmRSS")>>20)
	if mp2, _ := p.ok("VolumeDriver.Mount", map[string]any{"Name": "app", "ID": "c2"})["Mountpoint"].(string); mp2 != mp {
		t.Errorf("a second container's mountpoint %q, want %q", mp2, mp)
	}
	if n := strings.Count(p.log.String(), `msg="volume mounted"`); n != 1 {
		t.Errorf("%d mounts for two containers, want 1", n)
	}
	p.refused("VolumeDriver.Remove", map[string]any{"Name": "app"}, "in use")
	p.ok("VolumeDriver.Unmount", map[string]any{"Name": "app", "ID": "c1"})
	if !isMounted(mp) {
		t.Fatal("unmounted while a container still uses it")
	}
	p.ok("VolumeDriver.Unmount", map[string]any{"Name": "app", "ID": "c2"})
	if isMounted(mp) {
		t.Error("still mounted after the last Unmount")
	}
	if got := p.ok("VolumeDriver.List", nil); !strings.Contains(fmt.Sprint(got["Volumes"]), "Name:app") {
		t.Errorf("List = %v", got)
	}
	p.ok("VolumeDriver.Remove", map[string]any{"Name": "app"})
	p.refused("VolumeDriver.Get", map[string]any{"Name": "app"}, "no volume")
}

// A volume's mount is a process of its own: it outlives a plugin that
// crashes, and the plugin adopts it when it starts again; one whose mount
// died too is mounted again at the same path before the socket answers.
func TestDockerPluginRestart(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, map[string]string{"k": "v1"})
	dir := t.TempDir()
	p := startPlugin(t, dir, "--providers", "test", "--test-dir", b.Dir, "--ttl", "500ms")
	t.Cleanup(p.cleanup)
	for _, name := range []string{"kept", "lost", "stuck", "idle"} {
		p.ok("VolumeDriver.Create", map[string]any{"Name": name})
	}
	kept, _ := p.ok("VolumeDriver.Mount", map[string]any{"Name": "kept", "ID": "c1"})["Mountpoint"].(string)
	lost, _ := p.ok("VolumeDriver.Mount", map[string]any{"Name": "lost", "ID": "c1"})["Mountpoint"].(string)
	stuck, _ := p.ok("VolumeDriver.Mount", map[string]any{"Name": "stuck", "ID": "c1"})["Mountpoint"].(string)
	p.kill()
	// The mount of "stuck" hangs (stopped): a stat of it would never
	// return. It must not hold up the others, nor the plugin's start.
	stuckPid := mustDaemonFor(t, stuck)
	syscall.Kill(stuckPid, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(stuckPid, syscall.SIGKILL) })
	// The mounts serve on without the plugin; a rotation reaches them.
	b.write("k", "v2")
	eventually(t, 5*time.Second, "the rotation is read through the orphaned mount", func() bool {
		got, err := os.ReadFile(filepath.Join(kept, "test", "k"))
		return err == nil && string(got) == "v2"
	})
	// The mount of "lost" dies too.
	pid := mustDaemonFor(t, lost)
	syscall.Kill(pid, syscall.SIGKILL)
	eventually(t, 5*time.Second, "the killed mount is dead", func() bool {
		_, err := os.Stat(filepath.Join(lost, "test"))
		return err != nil
	})

	p.start()
	got := p.ok("VolumeDriver.List", nil)
	if s := fmt.Sprint(got["Volumes"]); !strings.Contains(s, "Name:idle") || !strings.Contains(s, "Mountpoint:"+kept) || !strings.Contains(s, "Mountpoint:"+lost) {
		t.Errorf("List after a restart = %s", s)
	}
	for _, mp := range []string{kept, lost, stuck} {
		if got, err := os.ReadFile(filepath.Join(mp, "test", "k")); err != nil || string(got) != "v2" {
			t.Errorf("%s after the restart: %q, %v", mp, got, err)
		}
	}
	if !strings.Contains(p.log.String(), "adopted") || !strings.Contains(p.log.String(), "volume mounted again") {
		t.Errorf("the log does not say what was adopted and what mounted again:\n%s", p.log)
	}
	// The counts came back: the one Unmount each unmounts.
	for _, name := range []string{"kept", "lost", "stuck"} {
		p.ok("VolumeDriver.Unmount", map[string]any{"Name": name, "ID": "c1"})
	}
	for _, mp := range []string{kept, lost, stuck} {
		if isMounted(mp) {
			t.Errorf("%s still mounted after its last Unmount", mp)
		}
	}
}

// mustDaemonFor is the pid of the secretfs mount serving dir.
func mustDaemonFor(t *testing.T, dir string) int {
	t.Helper()
	pid := daemonFor(dir)
	if pid == 0 {
		t.Fatalf("no mount process for %s", dir)
	}
	return pid
}
