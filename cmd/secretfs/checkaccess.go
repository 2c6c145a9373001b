package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/access"
	"github.com/secretfs/secretfs/config"
	"github.com/secretfs/secretfs/resolver"
)

const checkAccessUsage = `Usage: secretfs check-access [--config FILE] PATH --uid N [--gid N] [--groups N,N] [--exe P] [--cgroup C]
Says which access rule of the config file decides for PATH (below the mount,
such as aws/prod/db#password), and why, for a caller with these ids, program
and cgroup. Exit 0 if it may open, 5 if not. Nothing is mounted.
`

// checkAccessFlags are the caller's flags: a set of their own, since the
// config file and SECRETFS_* set the mount's settings, never the caller
// checked.
type checkAccessFlags struct {
	set       *pflag.FlagSet
	conf, exe *string
	cgroup    *string
	uid, gid  *uint32
	groups    *[]string
}

func newCheckAccessFlags() checkAccessFlags {
	set := pflag.NewFlagSet("check-access", pflag.ContinueOnError)
	set.SetOutput(io.Discard)
	return checkAccessFlags{set: set,
		conf:   set.String(config.FlagName, "", "the config file whose rules to check"),
		uid:    set.Uint32("uid", 0, "the caller's uid"),
		gid:    set.Uint32("gid", 0, "the caller's gid"),
		groups: set.StringSlice("groups", nil, "the caller's supplementary groups"),
		exe:    set.String("exe", "", "the caller's executable (as /proc/PID/exe shows it)"),
		cgroup: set.String("cgroup", "", "the caller's cgroup path (as /proc/PID/cgroup shows it)"),
	}
}

func runCheckAccess(args []string, stdout, stderr io.Writer) error {
	f := newCheckAccessFlags()
	set, conf, uid, gid, groups, exe, cgroup := f.set, f.conf, f.uid, f.gid, f.groups, f.exe, f.cgroup
	if err := set.Parse(args); errors.Is(err, pflag.ErrHelp) {
		fmt.Fprint(stdout, checkAccessUsage, "\nFlags:\n", set.FlagUsages())
		return nil
	} else if err != nil {
		return usagef("%v", err)
	}
	if set.NArg() != 1 || !set.Changed("uid") {
		return usagef("check-access takes one PATH and --uid")
	}
	// The rules, read as mount reads them (every key of the file is known).
	m := newMountFlags()
	mountArgs := []string{}
	if *conf != "" {
		mountArgs = append(mountArgs, "--"+config.FlagName, *conf)
	}
	if err := m.parse(mountArgs, io.Discard, mountUsage); err != nil {
		return err
	}
	// Rules match the secret a path reads, whatever its field or version.
	path := strings.Trim(set.Arg(0), "/")
	provider, rest, _ := strings.Cut(path, "/")
	ref, err := resolver.ParseKey(rest)
	if err != nil {
		return err
	}
	secret := provider + "/" + ref.Key
	caller := access.Caller{UID: *uid, GID: *gid, Exe: *exe, Cgroup: *cgroup}
	for _, g := range *groups {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return usagef("--groups %q: want numbers", g)
		}
		caller.Groups = append(caller.Groups, uint32(n))
	}
	if *exe == "" {
		caller.ExeErr = fmt.Errorf("not given (--exe)")
	}
	if *cgroup == "" {
		caller.CgroupErr = fmt.Errorf("not given (--cgroup)")
	}
	c := m.common
	r := c.rules.Match(secret)
	if r == nil {
		fmt.Fprintf(stdout, "%s: no rule matches (of %d): the global --uid, --gid and --file-mode apply, and the kernel's mode check alone decides\n", path, c.rules.Len())
		return nil
	}
	owner := ""
	if r.UID != nil || r.GID != nil || r.Mode != nil {
		owner = " (it also sets"
		if r.UID != nil {
			owner += fmt.Sprintf(" uid %d", *r.UID)
		}
		if r.GID != nil {
			owner += fmt.Sprintf(" gid %d", *r.GID)
		}
		if r.Mode != nil {
			owner += fmt.Sprintf(" mode %04o", *r.Mode)
		}
		owner += ")"
	}
	if ok, why := r.Permits(caller); !ok {
		fmt.Fprintf(stdout, "%s: denied by rule %s: %s%s\n", path, r.Name(), why, owner)
		return &deniedError{}
	}
	if r.Allow == nil {
		fmt.Fprintf(stdout, "%s: rule %s decides; it has no allow list, so the kernel's mode check alone decides%s\n", path, r.Name(), owner)
		return nil
	}
	fmt.Fprintf(stdout, "%s: allowed by rule %s%s\n", path, r.Name(), owner)
	return nil
}

// deniedError is check-access's "no": exit 5, already explained on stdout.
type deniedError struct{}

func (*deniedError) Error() string { return "denied" }
