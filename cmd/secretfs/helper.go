package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// helperName is the name mount(8) runs for `-t fuse.secretfs` (and so for
// fstab entries of that type): a symlink to this binary.
const helperName = "mount.fuse.secretfs"

// helperReady bounds how long the helper waits for the daemon's mount.
const helperReady = 2 * time.Minute

// runHelper is mount(8)'s helper:
//
//	mount.fuse.secretfs SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]
//
// Every long flag of `secretfs mount` is an option (`providers=env:aws`,
// `file_mode=0440`; dashes or underscores; lists separated by ":"). The
// generic options that mount(8) and systemd pass are handled as mount.fuse3
// handles them. The helper starts the daemon in the background and returns
// once the mount answers, or fails with the daemon's error.
func runHelper(args []string, stdout, stderr io.Writer) error {
	var positional, opts []string
	fake := false
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-o" && i+1 < len(args):
			opts = append(opts, strings.Split(args[i+1], ",")...)
			i++
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			opts = append(opts, strings.Split(a[2:], ",")...)
		case a == "-n", a == "-s", a == "-v": // no mtab, sloppy, verbose
		case a == "-f": // fake: check the options, mount nothing
			fake = true
		case strings.HasPrefix(a, "-"):
			return usagef("%s: unknown option %s", helperName, a)
		default:
			positional = append(positional, a)
		}
	}
	if len(positional) != 2 {
		return usagef("usage: %s SOURCE MOUNTPOINT [-o OPTIONS]", helperName)
	}
	flags, err := helperFlags(helperName, opts)
	if err != nil {
		return err
	}
	mountArgs := append(append([]string{"mount"}, flags...), positional[1])
	m, err := parseMountFlags(mountArgs[1:], io.Discard)
	if err != nil {
		return err
	}
	if m.auditLog == "-" && m.logFile == "" {
		// The daemon's stderr is gone once the helper returns: every audit
		// record would fail, and so would every read (the trail fails
		// closed).
		return usagef("%s: audit_log=- needs log_file= (the daemon has no stderr once mounted)", helperName)
	}
	if fake {
		return nil
	}
	return daemonize(mountArgs, stderr)
}

// generic are the options mount(8), fstab and systemd pass that are not
// secretfs's: the mount is always read-only, nodev and nosuid, and the rest
// concern when and how mount(8) mounts.
var generic = map[string]bool{
	"defaults": true, "rw": true, "ro": true, "dev": true, "nodev": true, "suid": true, "nosuid": true,
	"exec": true, "noexec": true, "auto": true, "noauto": true, "user": true, "nouser": true, "users": true,
	"owner": true, "group": true, "_netdev": true, "nofail": true, "sync": true, "async": true,
	"atime": true, "noatime": true, "relatime": true, "strictatime": true, "diratime": true, "nodiratime": true,
}

// helperFlags turns mount options into `secretfs mount` flags; who names
// the caller in errors (mount(8)'s helper, a Docker volume).
func helperFlags(who string, opts []string) ([]string, error) {
	known := newMountFlags().flagSet
	var flags, fuseOpts []string
	for _, o := range opts {
		name, val, hasVal := strings.Cut(o, "=")
		switch {
		case name == "" && !hasVal, generic[name], strings.HasPrefix(name, "x-"), name == "comment":
			continue
		case name == "default_permissions" || name == "debug":
			fuseOpts = append(fuseOpts, o)
			continue
		}
		flag := strings.ReplaceAll(name, "_", "-")
		f := known.Lookup(flag)
		if f == nil || flag == "options" || flag == "help" {
			return nil, usagef("%s: unknown option %q", who, name)
		}
		switch {
		case !hasVal && f.Value.Type() == "bool":
			flags = append(flags, "--"+flag)
		case !hasVal:
			return nil, usagef("%s: option %q needs a value (%s=...)", who, name, name)
		case strings.HasSuffix(f.Value.Type(), "Slice"):
			flags = append(flags, "--"+flag+"="+strings.ReplaceAll(val, ":", ","))
		default:
			flags = append(flags, "--"+flag+"="+val)
		}
	}
	if len(fuseOpts) > 0 {
		flags = append(flags, "-o", strings.Join(fuseOpts, ","))
	}
	return flags, nil
}

// daemonize starts `secretfs ARGS` in a session of its own and returns once
// it printed its ready line; if it exits first, its error is returned (it
// wrote the reason to stderr).
func daemonize(args []string, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	// Until it is ready, the daemon's log is relayed to the caller, so that
	// a failure explains itself; then the helper lets go of it (it exits),
	// and the daemon logs to --log-file if one is given. Holding the
	// caller's stderr would keep `out=$(mount ...)` waiting forever.
	logs, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		io.Copy(stderr, logs)
	}()
	err = awaitReady(cmd, out, helperReady, relayed)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("secretfs mount failed (exit %d)", ee.ExitCode())
	}
	return err
}

// awaitReady waits for a started `secretfs mount` (cmd, out its stdout)
// to print its ready line. If it exits first, it returns the exit, once
// relayed (if not nil) is closed: the reason the daemon wrote is passed on
// first. After within, it kills the daemon.
func awaitReady(cmd *exec.Cmd, out io.Reader, within time.Duration, relayed <-chan struct{}) error {
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.Contains(line, "mounted") {
			ready <- nil
			return
		}
		if relayed != nil {
			<-relayed
		}
		if err := cmd.Wait(); err != nil {
			ready <- fmt.Errorf("secretfs mount failed: %w", err)
			return
		}
		ready <- errors.New("secretfs mount exited before it was ready")
	}()
	select {
	case err := <-ready:
		return err
	case <-time.After(within):
		cmd.Process.Kill()
		return fmt.Errorf("secretfs mount: not ready within %v", within)
	}
}
