package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/secretfs/secretfs/access"
)

const checkAccessUsage = `Usage: secretfs check-access [--config FILE] PATH --uid N [--gid N] [--groups N,N] [--exe P] [--cgroup C]
Says which access rule of the config file decides for PATH (below the mount,
such as aws/prod/db#password), and why, for a caller with these ids, program
and cgroup. Exit 0 if it may open, 5 if not. Nothing is mounted.
`

func runCheckAccess(args []string, stdout, stderr io.Writer) error {
	c := newCommon("check-access")
	var uid, gid uint32
	var groups []string
	var exe, cgroup string
	c.flagSet.Uint32Var(&uid, "uid", 0, "the caller's uid")
	c.flagSet.Uint32Var(&gid, "gid", 0, "the caller's gid")
	c.flagSet.StringSliceVar(&groups, "groups", nil, "the caller's supplementary groups")
	c.flagSet.StringVar(&exe, "exe", "", "the caller's executable (as /proc/PID/exe shows it)")
	c.flagSet.StringVar(&cgroup, "cgroup", "", "the caller's cgroup path (as /proc/PID/cgroup shows it)")
	if err := c.parse(args, stdout, checkAccessUsage); err != nil {
		return helpOK(err)
	}
	if c.flagSet.NArg() != 1 || !c.flagSet.Changed("uid") {
		return usagef("check-access takes one PATH and --uid")
	}
	path := strings.Trim(c.flagSet.Arg(0), "/")
	caller := access.Caller{UID: uid, GID: gid, Exe: exe, Cgroup: cgroup}
	for _, g := range groups {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return usagef("--groups %q: want numbers", g)
		}
		caller.Groups = append(caller.Groups, uint32(n))
	}
	if exe == "" {
		caller.ExeErr = fmt.Errorf("not given (--exe)")
	}
	if cgroup == "" {
		caller.CgroupErr = fmt.Errorf("not given (--cgroup)")
	}
	r := c.rules.Match(path)
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
