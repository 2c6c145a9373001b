package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/control"
	"github.com/secretfs/secretfs/resolver"
)

const statusUsage = `Usage: secretfs status MOUNTPOINT
Prints what the mount at MOUNTPOINT is doing: version, uptime, mode, each
provider up or down, and the cache's counts. Exit 1 if nothing is mounted there.
`

const refreshUsage = `Usage: secretfs refresh MOUNTPOINT REF...
Drops and re-fetches now each REF (PROVIDER:KEY[@VERSION][#FIELD], or
PROVIDER:DIR/ for a directory), and has the kernel forget its copy, so that
the next open sees a value rotated seconds ago. Exit 1 if nothing is mounted
there.
`

// controlled answers the control socket of a mount.
type controlled struct {
	version, mountpoint, mode string
	started                   time.Time
	cache                     *cache.Cache
	providers                 []string
}

func (h *controlled) Status() control.Status {
	st := h.cache.Stats()
	values, negatives := h.cache.Len()
	health := h.cache.Health()
	out := control.Status{
		Version: h.version, Mountpoint: h.mountpoint, Started: h.started, Mode: h.mode,
		Cache: control.CacheStatus{Values: values, Negatives: negatives, Hits: st.Hits, Misses: st.Misses, Stale: st.Stale, Calls: st.Calls},
	}
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "VmLck:"); ok {
				out.VmLck = strings.TrimSpace(v)
			}
		}
	}
	for _, p := range h.providers {
		ps := control.ProviderStatus{Name: p, Up: true}
		if hh, ok := health[p]; ok {
			ps.Up, ps.LastError, ps.Since = hh.Up, hh.LastErr, hh.Since
		}
		out.Providers = append(out.Providers, ps)
	}
	return out
}

func (h *controlled) Refresh(ctx context.Context, refs []string) error {
	var errs []error
	for _, s := range refs {
		provider, rest, ok := strings.Cut(s, ":")
		if ok && (rest == "" || strings.HasSuffix(rest, "/")) {
			// A directory: everything at and below it is asked for again
			// at its next read; good values are kept meanwhile.
			h.cache.Expire(provider, strings.Trim(rest, "/"))
			continue
		}
		ref, err := resolver.Parse(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// A call of its own, stored before it returns; a backend that
		// does not answer leaves the last good value in place.
		if err := h.cache.Refresh(ctx, ref); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(stdout, statusUsage)
		return nil
	}
	if len(args) != 1 {
		return usagef("status takes one argument, the mountpoint")
	}
	st, err := control.GetStatus(args[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mountpoint: %s\nversion: %s\nuptime: %s\nmode: %s\nlocked memory: %s\n",
		st.Mountpoint, st.Version, time.Since(st.Started).Round(time.Second), st.Mode, st.VmLck)
	for _, p := range st.Providers {
		switch {
		case p.Up && p.LastError == "":
			fmt.Fprintf(stdout, "provider %s: up\n", p.Name)
		case p.Up:
			fmt.Fprintf(stdout, "provider %s: up (last error: %s)\n", p.Name, p.LastError)
		default:
			fmt.Fprintf(stdout, "provider %s: down since %s (%s)\n", p.Name, p.Since.Format(time.RFC3339), p.LastError)
		}
	}
	c := st.Cache
	fmt.Fprintf(stdout, "cache: %d values, %d negative answers; %d hits, %d misses, %d stale, %d backend calls\n",
		c.Values, c.Negatives, c.Hits, c.Misses, c.Stale, c.Calls)
	return nil
}

func runRefresh(args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(stdout, refreshUsage)
		return nil
	}
	if len(args) < 2 {
		return usagef("refresh takes the mountpoint and one or more references")
	}
	if err := control.Refresh(args[0], args[1:]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "refreshed %s\n", strings.Join(args[1:], " "))
	return nil
}
