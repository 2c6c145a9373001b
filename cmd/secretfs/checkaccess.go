package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/access"
	"github.com/secretfs/secretfs/config"
	"github.com/secretfs/secretfs/fs"
	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

const checkAccessUsage = `Usage: secretfs check-access [--config FILE] [--template NAME=FILE] PATH --uid N [--gid N] [--groups N,N] [--exe P] [--container] [--cgroup C [--delegated]]
Says which access rule of the config file decides for PATH (below the mount,
such as aws/prod/db#password or templates/NAME, or a path on a secretfs
mount), and why, for a caller with these ids, program and cgroup, as the
mount decides: for a template, the rules of the secrets it reads too, and
with allow-other the kernel's check of owner and mode. Exit 0 if it may
open, 5 if not. Nothing is mounted.
`

// checkAccessFlags are the caller's flags: a set of their own, since the
// config file and SECRETFS_* set the mount's settings, never the caller
// checked.
type checkAccessFlags struct {
	set       *pflag.FlagSet
	conf, exe *string
	cgroup    *string
	container *bool
	delegated *bool
	uid, gid  *uint32
	groups    *[]string
	templates *[]string
}

func newCheckAccessFlags() checkAccessFlags {
	set := pflag.NewFlagSet("check-access", pflag.ContinueOnError)
	set.SetOutput(io.Discard)
	return checkAccessFlags{set: set,
		conf:      set.String(config.FlagName, "", "the config file whose rules to check"),
		uid:       set.Uint32("uid", 0, "the caller's uid"),
		gid:       set.Uint32("gid", 0, "the caller's gid"),
		groups:    set.StringSlice("groups", nil, "the caller's supplementary groups"),
		exe:       set.String("exe", "", "the caller's executable (as /proc/PID/exe shows it): without --container, the file at that path here"),
		container: set.Bool("container", false, "the caller runs in another mount namespace (a container): --exe is a path there"),
		delegated: set.Bool("delegated", false, "the caller's cgroup is in a delegated subtree (not root's alone)"),
		templates: set.StringArray("template", nil, "a template the mount renders, NAME=FILE (as mount's --template)"),
		cgroup:    set.String("cgroup", "", "the caller's cgroup path (as /proc/PID/cgroup shows it)"),
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
	cfg, mo, err := m.fsConfig()
	if err != nil {
		return err
	}
	tmpls, err := loadTemplates(*f.templates, m.templateSection)
	if err != nil {
		return err
	}
	path, err := belowMount(set.Arg(0))
	if err != nil {
		return err
	}
	caller := access.Caller{UID: *uid, GID: *gid, Exe: *exe, Cgroup: *cgroup, OtherMntNS: *f.container}
	for _, g := range *groups {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return usagef("--groups %q: want numbers", g)
		}
		caller.Groups = append(caller.Groups, uint32(n))
	}
	if *exe == "" {
		caller.ExeErr = fmt.Errorf("not given (--exe)")
	} else if !*f.container {
		// A caller here runs the file at that path, if there is one.
		_, err := os.Stat(*exe)
		caller.ExeHere = err == nil
	}
	if *cgroup == "" {
		caller.CgroupErr = fmt.Errorf("not given (--cgroup)")
	} else if *f.delegated {
		caller.DelegatedAt = *cgroup
	}
	// What the mount matches: the secret a path reads, whatever its field
	// or version; for a template its own path and every secret it reads.
	def := access.Attr{UID: cfg.UID, GID: cfg.GID, Mode: cfg.FileMode}
	if def.Mode == 0 {
		def.Mode = 0o400
	}
	// Where a file's secrets have different owners it is secretfs's own
	// user's: taken as the one running this.
	self := access.Attr{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
	rules := m.common.rules
	provider, rest, _ := strings.Cut(path, "/")
	var paths []string
	var attr access.Attr
	if provider == "templates" {
		i := slices.IndexFunc(tmpls, func(t *templates.Template) bool { return t.Name == rest })
		if i < 0 {
			return usagef("%s: no such template (give the mount's templates with --config or --template)", path)
		}
		paths = append(append(paths, fs.TemplatePath(tmpls[i])), fs.TemplateInputs(tmpls[i])...)
		attr, _, _ = fs.TemplateAttr(rules, tmpls[i], def, self)
	} else {
		ref, err := resolver.ParseKey(rest)
		if err != nil {
			return err
		}
		paths = append(paths, provider+"/"+ref.Key)
		if ref.Version != "" {
			// A read of KEY@VERSION may serve the secret named exactly so,
			// where one exists: both rules must allow.
			paths = append(paths, provider+"/"+ref.Key+"@"+ref.Version)
		}
		attr, _ = rules.Combined(paths, def, self)
	}
	r, denied, why := rules.Decide(paths, func() access.Caller { return caller })
	mode := fmt.Sprintf(" (owner %d:%d, mode %04o)", attr.UID, attr.GID, attr.Mode)
	dir := access.Attr{UID: cfg.UID, GID: cfg.GID, Mode: cmp.Or(cfg.DirMode, 0o500)}
	switch {
	case denied:
		fmt.Fprintf(stdout, "%s: denied by rule %s: %s%s\n", path, r.Name(), why, mode)
		return &deniedError{}
	case !mo.AllowOther && caller.UID != uint32(os.Getuid()):
		fmt.Fprintf(stdout, "%s: denied: without allow-other only the user who mounts (taken as uid %d, who runs this) may enter the mount\n", path, os.Getuid())
		return &deniedError{}
	case mo.AllowOther && !access.ModeAllows(dir, caller, 0o1):
		fmt.Fprintf(stdout, "%s: denied by the kernel's check of the directories' owner and mode (owner %d:%d, mode %04o): no audit record is written for it\n", path, dir.UID, dir.GID, dir.Mode)
		return &deniedError{}
	case mo.AllowOther && !access.ModeAllows(attr, caller, 0o4):
		fmt.Fprintf(stdout, "%s: denied by the kernel's check of owner and mode%s: no audit record is written for it\n", path, mode)
		return &deniedError{}
	case r == nil && len(paths) > 1:
		fmt.Fprintf(stdout, "%s: allowed: no rule of its own, and the rules of the secrets it reads allow%s\n", path, mode)
	case r == nil:
		fmt.Fprintf(stdout, "%s: no rule matches (of %d): the global --uid, --gid and --file-mode apply, and the kernel's mode check alone decides%s\n", path, rules.Len(), mode)
	case r.Allow == nil:
		fmt.Fprintf(stdout, "%s: rule %s decides; it has no allow list, so the kernel's mode check alone decides%s\n", path, r.Name(), mode)
	default:
		fmt.Fprintf(stdout, "%s: allowed by rule %s%s\n", path, r.Name(), mode)
	}
	return nil
}

// belowMount is the path below the mount that p names: p itself when it is
// relative, and for an absolute path, the rest after the mountpoint of the
// secretfs mount it lies below.
func belowMount(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return strings.Trim(p, "/"), nil
	}
	clean := filepath.Clean(p)
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("fuse.secretfs"))
	if err != nil {
		return "", err
	}
	best := ""
	for _, mt := range mounts {
		if rel, err := filepath.Rel(mt.Mountpoint, clean); err == nil && rel != "." && !strings.HasPrefix(rel, "..") && len(mt.Mountpoint) > len(best) {
			best = mt.Mountpoint
		}
	}
	if best == "" {
		return "", usagef("%s is below no secretfs mount: give a path below the mount, such as aws/prod/db", p)
	}
	rel, _ := filepath.Rel(best, clean)
	return rel, nil
}

// deniedError is check-access's "no": exit 5, already explained on stdout.
type deniedError struct{}

func (*deniedError) Error() string { return "denied" }
