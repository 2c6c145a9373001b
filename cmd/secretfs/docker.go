package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/docker/go-plugins-helpers/volume"
	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/dockervolume"
	"github.com/secretfs/secretfs/fs"
)

const serveDockerUsage = `Usage: secretfs serve docker [flags]

Serves Docker's volume plugin protocol on a unix socket, so that

  docker volume create -d secretfs -o providers=aws -o aws-prefix=prod/ app
  docker run -v app:/run/secrets:ro IMAGE     # reads /run/secrets/aws/prod/...

Every flag of secretfs mount given here applies to every volume; a volume's
-o options (the long flag names, as in fstab: file_mode=0440, lists
separated by ':') may set only those that reach no host file, program or
other address. Each mounted volume is a secretfs mount process of its own,
at BASE-DIR/NAME, which outlives the plugin; the state file lets a plugin
that starts again find its volumes.
`

// volumeOptions are the mount flags a volume's options may set: none
// names a host file, runs a program, or sends the plugin's credentials
// to another address. The rest are the plugin's own flags.
var volumeOptions = []string{"providers", "uid", "gid", "file-mode", "dir-mode", "ttl", "negative-ttl", "max-stale",
	"max-entries", "timeout", "log-level", "log-format", "aws-prefix", "aws-region", "vault-mounts",
	"vault-namespace", "mlock", "shutdown-grace"}

// dockerFlags are serve docker's: every mount flag (the volumes'
// defaults) and the plugin's own.
type dockerFlags struct {
	*mountFlags
	name, socketAddr, specDir, baseDir, stateFile, configDir, auditDir string
	allowEnv, allowTCP                                                 bool
}

// pluginOnly are the flags of the plugin itself, never a volume's.
var pluginOnly = []string{"name", "socket-addr", "spec-dir", "allow-tcp", "base-dir", "state-file", "config-dir", "audit-dir", "allow-env", "help", "config"}

func newDockerFlags() *dockerFlags {
	d := &dockerFlags{mountFlags: newMountFlags()}
	f := d.flagSet
	f.StringVar(&d.name, "name", "secretfs", "the driver's name (docker volume create -d NAME): the socket is /run/docker/plugins/NAME.sock")
	f.StringVar(&d.socketAddr, "socket-addr", "", "the unix socket to serve on (default /run/docker/plugins/NAME.sock), or HOST:PORT with a spec file in --spec-dir; a socket systemd passes (LISTEN_FDS) wins")
	f.StringVar(&d.specDir, "spec-dir", "/etc/docker/plugins", "where a TCP --socket-addr is written, as NAME.spec, for dockerd to find")
	f.StringVar(&d.baseDir, "base-dir", "/var/lib/docker-volumes/secretfs", "where volumes are mounted, each at BASE-DIR/NAME")
	f.StringVar(&d.stateFile, "state-file", "/var/lib/secretfs/docker-plugin.state", "the volumes, kept across restarts of the plugin")
	f.StringVar(&d.configDir, "config-dir", "", "the directory whose files a volume may name with -o config=FILE (rules, templates; no exec providers)")
	f.StringVar(&d.auditDir, "audit-dir", "", "write each volume's audit trail to AUDIT-DIR/NAME.jsonl")
	f.BoolVar(&d.allowEnv, "allow-env", false, "offer the env provider to volumes: it serves the plugin's own environment (only what --env-allow shows)")
	f.BoolVar(&d.allowTCP, "allow-tcp", false, "let --socket-addr be a TCP address: whoever can connect to it may mount volumes")
	return d
}

func runServe(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "docker" {
		return usagef("serve: want serve docker")
	}
	p, err := newDockerPlugin(args[1:], stdout, stderr)
	if err != nil {
		return helpOK(err)
	}
	return p.serve(stdout)
}

// dockerPlugin is a running `secretfs serve docker`.
type dockerPlugin struct {
	flags    *dockerFlags
	defaults []string  // mount flags every volume gets
	execs    []execDef // the exec providers the plugin's own flags define
	log      *slog.Logger
	sink     *logSink
}

func newDockerPlugin(args []string, stdout, stderr io.Writer) (*dockerPlugin, error) {
	d := newDockerFlags()
	if err := d.parse(args, stdout, serveDockerUsage); err != nil {
		return nil, err
	}
	if d.flagSet.NArg() != 0 {
		return nil, usagef("serve docker takes no arguments")
	}
	if !dockervolume.ValidName.MatchString(d.name) {
		return nil, usagef("--name %q: want letters, digits, '_', '.' and '-'", d.name)
	}
	if d.socketAddr == "" {
		d.socketAddr = "/run/docker/plugins/" + d.name + ".sock"
	}
	// Its --config sets flags (every volume's defaults among them); rules,
	// templates and exec providers reach a volume only through its own
	// config file in --config-dir, or the plugin's --exec-provider flags.
	if d.rules.Len() > 0 || d.templateSection != nil || d.execSection != nil {
		return nil, usagef("serve docker: --config %s: rules, templates and exec-providers go in a volume's file of --config-dir (-o config=NAME); exec providers in --exec-provider", d.configFile)
	}
	if d.metricsAddr != "" {
		return nil, usagef("serve docker: --metrics-addr: every volume's mount would take the same address")
	}
	p := &dockerPlugin{flags: d, execs: d.execs}
	d.flagSet.Visit(func(f *pflag.Flag) {
		if slices.Contains(pluginOnly, f.Name) {
			return
		}
		for _, v := range flagValues(f) {
			p.defaults = append(p.defaults, "--"+f.Name+"="+v)
		}
	})
	// The defaults alone must make a mount.
	if _, err := parseMountFlags(append(slices.Clone(p.defaults), "/"), io.Discard); err != nil {
		return nil, err
	}
	p.sink = newLogSink(stderr)
	log, err := d.logger(p.sink)
	if err != nil {
		return nil, err
	}
	p.log = log
	return p, nil
}

// check turns a volume's options into its mount's flags (see
// dockervolume.Checker).
func (p *dockerPlugin) check(name string, opts map[string]string) ([]string, error) {
	who := "volume " + name
	var kv []string
	set := map[string]bool{} // the flags the volume sets, which replace the plugin's
	config := ""
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		v := opts[k]
		flag := strings.ReplaceAll(k, "_", "-")
		switch {
		case flag == "config":
			if p.flags.configDir == "" {
				return nil, usagef("%s: option config: the plugin names no --config-dir", who)
			}
			if !dockervolume.ValidName.MatchString(v) {
				return nil, usagef("%s: option config=%q: want the name of a file in the plugin's --config-dir", who, v)
			}
			config = filepath.Join(p.flags.configDir, v)
		case slices.Contains(volumeOptions, flag):
			kv = append(kv, k+"="+v)
			set[flag] = true
		case p.flags.flagSet.Lookup(flag) != nil && !slices.Contains(pluginOnly, flag):
			return nil, usagef("%s: option %s is not offered to volumes (it names a host file, runs a program or sends the plugin's credentials elsewhere): set it in the plugin's flags", who, k)
		default:
			return nil, usagef("%s: unknown option %q", who, k)
		}
	}
	flags, err := helperFlags(who, kv)
	if err != nil {
		return nil, err
	}
	// A volume's own setting replaces the plugin's, for lists too.
	var args []string
	for _, d := range p.defaults {
		name, _, _ := strings.Cut(strings.TrimPrefix(d, "--"), "=")
		if !set[name] {
			args = append(args, d)
		}
	}
	if config != "" {
		args = append(args, "--config="+config)
	}
	args = append(args, flags...)
	args = append(args, "--allow-other")
	if p.flags.auditDir != "" {
		args = append(args, "--audit-log="+filepath.Join(p.flags.auditDir, name+".jsonl"))
	}
	m, err := parseMountFlags(append(slices.Clone(args), "/"), io.Discard)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", who, err)
	}
	for _, e := range m.execs {
		if !slices.ContainsFunc(p.execs, func(o execDef) bool { return reflect.DeepEqual(o, e) }) {
			return nil, usagef("%s: exec provider %s is not the plugin's: volumes use only those of the plugin's own flags", who, e.Name)
		}
	}
	for _, prov := range m.providers {
		if strings.TrimSpace(prov) == "env" && !p.flags.allowEnv {
			return nil, usagef("%s: provider env would serve the plugin's own environment to every container: the plugin needs --allow-env", who)
		}
	}
	return args, nil
}

func (p *dockerPlugin) serve(stdout io.Writer) error {
	defer p.sink.Close(2 * time.Second)
	exe, err := selfExe()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p.flags.stateFile), 0o700); err != nil {
		return fmt.Errorf("--state-file: %w", err)
	}
	drv, err := dockervolume.New(p.flags.baseDir, p.flags.stateFile, p.check, &childMounter{exe: exe, log: p.log}, p.log)
	if err != nil {
		return err
	}
	ln, where, cleanup, err := p.listen()
	if err != nil {
		return fmt.Errorf("--socket-addr: %w", err)
	}
	defer cleanup()
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- volume.NewHandler(drv).Serve(ln) }()
	p.log.Info("serving the Docker volume plugin", "socket", where, "base_dir", p.flags.baseDir)
	fmt.Fprintf(stdout, "secretfs: serving docker volumes on %s\n", where)
	notify(p.log, "READY=1\nSTATUS=serving docker volumes on "+where)
	select {
	case s := <-sigs:
		// The volumes' mounts go on: containers keep reading them, and the
		// plugin adopts them when it starts again.
		p.log.Info("stopping; mounted volumes stay mounted", "signal", s.String())
		ln.Close()
		return nil
	case err := <-served:
		return err
	}
}

// listen opens where the plugin serves: the socket systemd passed
// (socket activation, which it leaves in place), a TCP address announced
// by a spec file (removed at exit), or a unix socket (removed at exit).
func (p *dockerPlugin) listen() (net.Listener, string, func(), error) {
	if ls, err := activation.Listeners(); err == nil && len(ls) > 0 {
		for _, l := range ls[1:] {
			l.Close()
		}
		return ls[0], ls[0].Addr().String() + " (from systemd)", func() {}, nil
	}
	addr := p.flags.socketAddr
	if !strings.HasPrefix(addr, "/") && strings.Contains(addr, ":") {
		if !p.flags.allowTCP {
			return nil, "", nil, usagef("%s: a TCP address has no access control (any local user could mount volumes): give --allow-tcp to mean it", addr)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, "", nil, err
		}
		if host, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(host).IsLoopback() {
			p.log.Warn("serving the plugin on a TCP address beyond this host: whoever reaches it may mount volumes", "addr", ln.Addr().String())
		}
		spec := filepath.Join(p.flags.specDir, p.flags.name+".spec")
		if err := os.MkdirAll(p.flags.specDir, 0o755); err != nil {
			ln.Close()
			return nil, "", nil, err
		}
		if err := os.WriteFile(spec, []byte("tcp://"+ln.Addr().String()+"\n"), 0o644); err != nil {
			ln.Close()
			return nil, "", nil, err
		}
		return ln, ln.Addr().String() + " (" + spec + ")", func() { os.Remove(spec) }, nil
	}
	ln, err := listenPlugin(addr)
	if err != nil {
		return nil, "", nil, err
	}
	return ln, addr, func() { os.Remove(addr) }, nil
}

// listenPlugin listens on a unix socket at path, replacing a stale one,
// readable and writable by root only (whoever may use it may mount).
func listenPlugin(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	old := syscall.Umask(0o117) // no moment when others may connect
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// childMounter mounts each volume as a `secretfs mount` in a session of
// its own, which outlives the plugin; its log goes where the plugin's
// goes.
type childMounter struct {
	exe string
	log *slog.Logger
}

// mountReady bounds how long a volume's mount may take to answer.
const mountReady = 30 * time.Second

func (c *childMounter) Mount(dir string, args []string) (int, error) {
	// What is left of an earlier mount goes first, lazily: a stat of a
	// mount whose daemon hangs would never return.
	if fs.Mounted(dir) {
		if err := fs.Detach(dir); err != nil {
			return 0, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	cmd := exec.Command(c.exe, append(append([]string{"mount"}, args...), dir)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stderr = os.Stderr
	// Its own process: systemd's notifications and sockets are the
	// plugin's.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return name == "NOTIFY_SOCKET" || strings.HasPrefix(name, "WATCHDOG_") || strings.HasPrefix(name, "LISTEN_")
	})
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	if err := awaitReady(cmd, out, mountReady, nil); err != nil {
		return 0, fmt.Errorf("%w: see the plugin's log", err)
	}
	go cmd.Wait() // reaps it, whenever it ends
	return cmd.Process.Pid, nil
}

// ours reports whether pid is a secretfs mount of dir that this plugin's
// user runs (another user's process that looks like one, at a pid used
// again, is not; a mount of a binary since upgraded still is, so that a
// plugin upgraded and restarted adopts it).
func ours(dir string, pid int) bool {
	if pid <= 0 {
		return false
	}
	fi, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	if err != nil {
		return false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return len(args) > 2 && args[1] == "mount" && args[len(args)-1] == dir
}

// Unmount asks the mount's process to unmount (SIGTERM); one that does not
// within 10 s, or that is not ours, is detached lazily, and its process
// killed.
func (c *childMounter) Unmount(dir string, pid int) error {
	mine := ours(dir, pid)
	if mine {
		syscall.Kill(pid, syscall.SIGTERM) // it unmounts (lazily if busy) and exits
		if waitUnmounted(dir, 10*time.Second) {
			return nil
		}
		c.log.Warn("volume's mount did not stop within 10s: detached and killed", "dir", dir, "pid", pid)
	}
	if fs.Mounted(dir) {
		if err := fs.Detach(dir); err != nil {
			return err
		}
	}
	if mine {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if !waitUnmounted(dir, 5*time.Second) {
		return fmt.Errorf("%s still mounted", dir)
	}
	return nil
}

func waitUnmounted(dir string, within time.Duration) bool {
	for deadline := time.Now().Add(within); fs.Mounted(dir); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func (c *childMounter) Alive(dir string, pid int) bool {
	if !ours(dir, pid) || !fs.Mounted(dir) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return fs.Answers(ctx, dir) == nil
}

// flagValues are the values a flag was given, one per item for a list.
func flagValues(f *pflag.Flag) []string {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return sv.GetSlice()
	}
	return []string{f.Value.String()}
}
