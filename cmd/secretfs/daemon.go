// The daemon's life as a service: hardening, systemd notifications and
// its watchdog, and the signals that stop it.

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/secretfs/secretfs/fs"
	"github.com/secretfs/secretfs/locked"
)

// harden makes the process non-dumpable (a process of the same uid can then
// neither ptrace it nor read its /proc/PID/environ or mem) with no core
// files. With mlock it returns the arena that keeps values out of swap
// (see package locked), once it has locked a first chunk.
func harden(mlock bool) (*locked.Arena, error) {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return nil, fmt.Errorf("no core files (RLIMIT_CORE): %w", err)
	}
	if !mlock {
		return nil, nil
	}
	a := locked.New(0)
	if _, _, err := a.Copy([]byte{0}); err != nil {
		return nil, fmt.Errorf("--mlock: %w: it needs CAP_IPC_LOCK, or an RLIMIT_MEMLOCK of at least %d KiB and more for the values held", err, locked.ChunkSize>>10)
	}
	return a, nil
}

// notify tells systemd (Type=notify) about the service, when it runs
// under systemd (NOTIFY_SOCKET).
func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("systemd notification failed", "error", err)
	}
}

// watchdog pings systemd's watchdog (WATCHDOG_USEC) at half its interval
// while the mount answers a stat of its root. It returns the function that
// stops it.
func watchdog(log *slog.Logger, dir string) func() {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), interval/2)
			err := fs.StatWithin(ctx, dir)
			cancel()
			if err != nil {
				log.Warn("the mount does not answer; not pinging the watchdog", "error", err)
				continue
			}
			notify(log, "WATCHDOG=1")
		}
	}()
	return func() { close(done) }
}

// waitForStop waits for a signal that stops the daemon (true) or for the
// mount to go away from outside (false). SIGHUP reloads and never stops it.
func waitForStop(unmounted <-chan struct{}, sigs <-chan os.Signal, reload func(), log *slog.Logger) bool {
	for {
		select {
		case <-unmounted:
			return false
		case s := <-sigs:
			switch s {
			case syscall.SIGHUP:
				log.Info("SIGHUP: reloading the configuration")
				reload()
			default:
				log.Info("signal received", "signal", s.String())
				return true
			}
		}
	}
}
