package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// engine is a private Docker Engine: its own data and exec roots, and its
// own mount namespace, where /run/docker (and so /run/docker/plugins,
// where it finds plugins) is a tmpfs of its own. Nothing it does reaches a
// Docker the machine may run.
type engine struct {
	t   *testing.T
	dir string
	pid int
	cmd *exec.Cmd
}

func startEngine(t *testing.T) *engine {
	t.Helper()
	for _, tool := range []string{"dockerd", "docker", "unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: a real Docker Engine is not tested here (make docker-tools installs Debian's docker.io)", tool)
		}
	}
	dir, err := os.MkdirTemp("", "sfsd") // short: unix socket paths
	if err != nil {
		t.Fatal(err)
	}
	e := &engine{t: t, dir: dir}
	os.WriteFile(filepath.Join(dir, "daemon.json"), []byte(`{"deprecated-key-path": "`+filepath.Join(dir, "key.json")+`"}`), 0o600)
	script := "mkdir -p /run/docker && mount -t tmpfs -o mode=0755 tmpfs /run/docker && exec dockerd --config-file " + dir + "/daemon.json" +
		" --data-root " + dir + "/data --exec-root " + dir + "/exec --host unix://" + dir + "/docker.sock --pidfile " + dir + "/docker.pid" +
		" --storage-driver vfs --iptables=false --ip6tables=false --bridge=none"
	e.cmd = exec.Command("unshare", "-m", "--propagation", "private", "--", "sh", "-c", script)
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.pid = e.cmd.Process.Pid
	t.Cleanup(e.stop)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, _, err := e.docker("info"); err == nil {
			return e
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "dockerd.log"))
			t.Skipf("dockerd did not start within 60s; a real Docker Engine is not tested here:\n%s", tail(string(log), 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// docker runs the Docker CLI against the engine.
func (e *engine) docker(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", "unix://" + e.dir + "/docker.sock"}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+filepath.Join(e.dir, "cli"))
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (e *engine) must(args ...string) string {
	e.t.Helper()
	out, errs, err := e.docker(args...)
	if err != nil {
		e.t.Fatalf("docker %s: %v\n%s%s", strings.Join(args, " "), err, out, errs)
	}
	return out
}

// nsenter runs in the engine's mount namespace: the plugin and its mounts
// live there, as they would beside a system's dockerd.
func (e *engine) nsenter() []string {
	return []string{"nsenter", "-t", strconv.Itoa(e.pid), "-m", "--"}
}

// mounted reports whether dir is mounted in the engine's namespace.
func (e *engine) mounted(dir string) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", e.pid))
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

func (e *engine) stop() {
	if out, _, err := e.docker("ps", "-aq"); err == nil && strings.TrimSpace(out) != "" {
		e.docker(append([]string{"rm", "-f"}, strings.Fields(out)...)...)
	}
	// The volumes' mounts (in the engine's namespace) end with their
	// unmount; then the engine.
	stopMountsBelow(e.dir)
	e.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		e.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(e.dir)
}

// stopMountsBelow ends every secretfs mount process whose mountpoint is
// below dir.
func stopMountsBelow(dir string) {
	pids := daemonsWhere(func(mnt string) bool { return strings.HasPrefix(mnt, dir+"/") })
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	gone := func() bool {
		return !slices.ContainsFunc(pids, func(pid int) bool { return syscall.Kill(pid, 0) == nil })
	}
	if !waitFor(10*time.Second, gone) {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// buildReader builds the test image: FROM scratch, the reader program.
func (e *engine) buildReader() string {
	e.t.Helper()
	ctxDir := filepath.Join(e.dir, "image")
	os.MkdirAll(ctxDir, 0o755)
	build := exec.Command("go", "build", "-o", filepath.Join(ctxDir, "reader"), "./testdata/reader")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		e.t.Fatalf("building the reader: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\nCOPY reader /reader\nENTRYPOINT [\"/reader\"]\n"), 0o644)
	e.must("build", "-q", "-t", "secretfs-it-reader", ctxDir)
	return "secretfs-it-reader"
}

// The host plugin with a real Docker Engine: volumes of a real backend
// (kumo) read by containers, shared by two, separated by prefix, rotated
// under a running container, refused where they should be, and kept
// across a crash of the plugin.
func TestDockerVolumesWithARealEngine(t *testing.T) {
	t.Parallel()
	e := startEngine(t)
	image := e.buildReader()
	k := kumoWith(t, map[string]string{"prod/db": "prod-1", "dev/db": "dev-1"})
	const name = "secretfs-it"
	vols := filepath.Join(e.dir, "volumes")
	wrap := append(e.nsenter(), "env", "SFS_IT_TOKEN=from-the-plugins-env")
	wrap = append(wrap, k.Env(t)...)
	p := startPluginAt(t, e.dir, "/run/docker/plugins/"+name+".sock", wrap,
		"--name", name, "--base-dir", vols, "--providers", "aws", "--ttl", "500ms", "--timeout", "2s",
		"--allow-env", "--env-allow", "SFS_IT_*")
	t.Cleanup(p.cleanup) // before the engine's: the plugin goes first

	run := func(vol string, args ...string) (string, string, error) {
		return e.docker(append([]string{"run", "--rm", "--network", "none", "-v", vol + ":/run/secrets:ro", image}, args...)...)
	}
	e.must("volume", "create", "-d", name, "-o", "aws_prefix=prod/", "-o", "uid=1000", "prod")
	e.must("volume", "create", "-d", name, "-o", "aws_prefix=dev/", "dev")
	start := time.Now()
	if out, errs, err := run("prod", "/run/secrets/aws/prod/db"); err != nil || out != "prod-1" {
		t.Fatalf("a container reads prod/db: %q, %v\n%s\n%s", out, err, errs, p.log)
	}
	t.Logf("docker run of a reader through a new volume: %v", time.Since(start))
	if out, _, err := run("prod", "/run/secrets/aws/dev/db"); err == nil {
		t.Errorf("the prod volume shows dev/db: %q", out)
	}
	if out, errs, err := run("dev", "/run/secrets/aws/dev/db"); err != nil || out != "dev-1" {
		t.Errorf("the dev volume: %q, %v %s", out, err, errs)
	}
	// The env provider, which the plugin offers (--allow-env), shows only
	// what its --env-allow does.
	e.must("volume", "create", "-d", name, "-o", "providers=env:aws", "-o", "aws_prefix=prod/", "both")
	if out, errs, err := run("both", "/run/secrets/env/SFS_IT_TOKEN", "/run/secrets/aws/prod/db"); err != nil || out != "from-the-plugins-envprod-1" {
		t.Errorf("env and aws through one volume: %q, %v %s", out, err, errs)
	}
	if out, _, err := run("both", "/run/secrets/env/AWS_SECRET_ACCESS_KEY"); err == nil {
		t.Errorf("the plugin's credentials through the env provider: %q", out)
	}

	t.Run("refused", func(t *testing.T) {
		for _, tt := range []struct {
			args []string
			want string
		}{
			{[]string{"volume", "create", "-d", name, "-o", "audit_log=/etc/passwd", "bad1"}, "not offered to volumes"},
			{[]string{"volume", "create", "-d", name, "-o", "colour=blue", "bad2"}, "unknown option"},
			{[]string{"volume", "create", "-d", name, "-o", "env_allow=AWS_*", "bad3"}, "env_allow is not offered"},
			{[]string{"volume", "rm", "nosuchvolume"}, "no such volume"},
		} {
			_, errs, err := e.docker(tt.args...)
			if err == nil || !strings.Contains(errs, tt.want) {
				t.Errorf("docker %s: %v %q, want an error with %q", strings.Join(tt.args, " "), err, errs, tt.want)
			}
		}
	})

	// Two running containers share one mount; a rotation reaches them.
	mounts := func() int { return strings.Count(p.log.String(), `msg="volume mounted" volume=prod`) }
	before := mounts()
	for _, c := range []string{"c1", "c2"} {
		e.must("run", "-d", "--name", c, "--network", "none", "-v", "prod:/s:ro", image, "-every", "100ms", "/s/aws/prod/db")
	}
	if n := mounts() - before; n != 1 {
		t.Errorf("the prod volume was mounted %d times for two running containers, want 1", n)
	}
	if _, errs, err := e.docker("volume", "rm", "prod"); err == nil || !strings.Contains(errs, "in use") {
		t.Errorf("docker volume rm of a volume in use: %v %q", err, errs)
	}
	k.Client().PutSecretValue(context.Background(), putValue("prod/db", "prod-2"))
	waitLogs := func(c, want string) {
		t.Helper()
		eventually(t, 10*time.Second, c+" sees "+want, func() bool {
			out, _, _ := e.docker("logs", "--tail", "3", c)
			return strings.Contains(out, "value: "+want)
		})
	}
	waitLogs("c1", "prod-2")

	// The plugin crashes with both running: they go on reading; it starts
	// again, knows its volumes, and a new container reads through one.
	p.kill()
	k.Client().PutSecretValue(context.Background(), putValue("prod/db", "prod-3"))
	waitLogs("c2", "prod-3")
	p.start()
	if out := e.must("volume", "ls", "-q"); !strings.Contains(out, "prod") || !strings.Contains(out, "dev") {
		t.Errorf("docker volume ls after the plugin's restart: %q", out)
	}
	if out, errs, err := run("prod", "/run/secrets/aws/prod/db"); err != nil || out != "prod-3" {
		t.Errorf("a new container after the restart: %q, %v %s", out, err, errs)
	}
	// Stopping both unmounts it; then it can be removed.
	e.must("rm", "-f", "c1", "c2")
	eventually(t, 10*time.Second, "the volume is unmounted once no container uses it", func() bool { return !e.mounted(filepath.Join(vols, "prod")) })
	e.must("volume", "rm", "prod", "dev", "both")
	if out := e.must("volume", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("volumes left: %q", out)
	}
}

func putValue(id, value string) *sm.PutSecretValueInput {
	return &sm.PutSecretValueInput{SecretId: aws.String(id), SecretString: aws.String(value)}
}

// The managed plugin: deploy/docker/plugin's config.json and a rootfs of
// the static binary (build.sh), created, configured and enabled with the
// Docker CLI; a volume of kumo through it, read by a container.
func TestDockerManagedPlugin(t *testing.T) {
	t.Parallel()
	e := startEngine(t)
	image := e.buildReader()
	k := kumoWith(t, map[string]string{"prod/db": "managed-1"})
	bin := filepath.Join(e.dir, "secretfs-static")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/secretfs")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("a static secretfs: %v\n%s", err, out)
	}
	pdir := filepath.Join(e.dir, "plugin")
	if out, err := exec.Command("../deploy/docker/plugin/build.sh", bin, pdir).CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	state := filepath.Join(e.dir, "plugin-state")
	os.MkdirAll(state, 0o700)
	const name = "secretfs-it-managed"
	e.must("plugin", "create", name, pdir)
	t.Cleanup(func() {
		e.docker("plugin", "disable", "-f", name)
		e.docker("plugin", "rm", "-f", name)
	})
	e.must("plugin", "set", name, "state.source="+state, "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=test-access-key",
		"AWS_SECRET_ACCESS_KEY=test-secret-key", "AWS_ENDPOINT_URL_SECRETS_MANAGER="+k.Endpoint(),
		"args=--log-level=debug --providers=aws --ttl=500ms")
	start := time.Now()
	e.must("plugin", "enable", name)
	t.Logf("docker plugin enable: %v", time.Since(start))
	e.must("volume", "create", "-d", name, "-o", "aws_prefix=prod/", "mvol")
	out, errs, err := e.docker("run", "--rm", "--network", "none", "-v", "mvol:/s:ro", image, "/s/aws/prod/db")
	if err != nil || out != "managed-1" {
		t.Fatalf("a container through the managed plugin: %q, %v\n%s", out, err, errs)
	}
	if _, errs, err := e.docker("volume", "create", "-d", name, "-o", "providers=env", "menv"); err == nil || !strings.Contains(errs, "--allow-env") {
		t.Errorf("env through the managed plugin: %v %q", err, errs)
	}
	e.must("volume", "rm", "mvol")
	if b, err := os.ReadFile(filepath.Join(state, "docker-plugin.state")); err != nil || strings.Contains(string(b), "mvol") {
		t.Errorf("the plugin's state, in the settable mount: %q, %v", b, err)
	}
}

// The README's container recipe with a real engine: deploy/docker's image
// (a static binary) mounts one level below a shared parent, the
// application's container gets the parent rslave, and a restart of the
// secretfs container (a new mount) reaches the running application.
func TestDockerContainerRecipe(t *testing.T) {
	t.Parallel()
	e := startEngine(t)
	reader := e.buildReader()
	k := kumoWith(t, map[string]string{"prod/db": "recipe-1"})
	ctxDir := filepath.Join(e.dir, "sfs-image")
	os.MkdirAll(ctxDir, 0o755)
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctxDir, "secretfs-static"), "../cmd/secretfs")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("a static secretfs: %v\n%s", err, out)
	}
	e.must("build", "-q", "-f", "../deploy/docker/Dockerfile", "--build-arg", "BINARY=secretfs-static", "-t", "secretfs-it-image", ctxDir)
	if out := e.must("run", "--rm", "--network", "none", "secretfs-it-image", "version"); !strings.Contains(out, "providers:") {
		t.Errorf("secretfs version in the image: %q", out)
	}

	// The shared parent, on the engine's host (its mount namespace).
	shared := filepath.Join(e.dir, "shared")
	os.MkdirAll(filepath.Join(shared, "mnt"), 0o755)
	for _, args := range [][]string{{"mount", "--bind", shared, shared}, {"mount", "--make-shared", shared}} {
		if out, err := exec.Command(e.nsenter()[0], append(e.nsenter()[1:], args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run := []string{"run", "-d", "--name", "sfs", "--network", "host", "--cap-add", "SYS_ADMIN", "--device", "/dev/fuse"}
	for _, kv := range k.Env(t) {
		if strings.HasPrefix(kv, "AWS_REGION=") || strings.HasPrefix(kv, "AWS_ACCESS_KEY_ID=") || strings.HasPrefix(kv, "AWS_SECRET_ACCESS_KEY=") || strings.HasPrefix(kv, "AWS_ENDPOINT_URL_SECRETS_MANAGER=") {
			run = append(run, "-e", kv)
		}
	}
	run = append(run, "--mount", "type=bind,source="+shared+",target="+shared+",bind-propagation=rshared",
		"secretfs-it-image", "mount", "--allow-other", "--providers", "aws", "--ttl", "500ms", shared+"/mnt")
	e.must(run...)
	mnt := filepath.Join(shared, "mnt")
	if !waitFor(20*time.Second, func() bool { return e.mounted(mnt) }) {
		logs, errs, _ := e.docker("logs", "sfs")
		t.Fatalf("secretfs's container did not mount below the shared parent:\n%s%s", logs, errs)
	}
	e.must("run", "-d", "--name", "app", "--network", "none", "--mount", "type=bind,source="+shared+",target=/run/secrets,readonly,bind-propagation=rslave",
		reader, "-every", "100ms", "/run/secrets/mnt/aws/prod/db")
	waitLogs := func(want string) {
		t.Helper()
		eventually(t, 20*time.Second, "the application reads "+want, func() bool {
			out, _, _ := e.docker("logs", "--tail", "3", "app")
			return strings.Contains(out, "value: "+want)
		})
	}
	waitLogs("recipe-1")
	e.must("restart", "-t", "5", "sfs")
	k.Client().PutSecretValue(context.Background(), putValue("prod/db", "recipe-2"))
	waitLogs("recipe-2")
	e.must("rm", "-f", "app")
	e.must("stop", "-t", "10", "sfs") // SIGTERM: secretfs unmounts
	if e.mounted(mnt) {
		t.Error("the mount outlived its container's stop")
	}
	e.must("rm", "sfs")
	exec.Command(e.nsenter()[0], append(e.nsenter()[1:], "umount", shared)...).Run()
}
