// Package access holds the per-path rules of the config file: who owns a
// file, its mode, and who may open it.
//
//	rules:
//	  - path: "aws/prod/**"   # glob on a secret's path below the mount; ** crosses '/'
//	    uid: 1000             # owner of the files it matches
//	    gid: 1000
//	    mode: "0440"          # files only; directories keep --dir-mode
//	    allow:                # who may open, checked by secretfs on every open
//	      uids: [1000]
//	      gids: [1000]        # the caller's gid or one of its supplementary groups
//	      exe: ["/usr/local/bin/myapp"]  # the caller's program; * matches anything
//	      cgroups: ["*/docker-3f9c*"]    # the caller's cgroup path; * matches anything
//	      delegated: false      # whether a cgroup the caller may write counts
//
// A rule matches a secret, PROVIDER/KEY: every name that reads it (its
// fields "#F", its versions "@V", the "NAME@" of a name that is also a
// directory) is governed by the same rule, so no other spelling of a name
// gets around it. The first rule whose path matches decides; a secret no
// rule matches keeps the global flags. Inside allow every listed kind must match, and within a
// kind any entry may. A caller whose executable or cgroup cannot be read is
// denied where the rule asks for it, never let through.
//
// A program is matched by the file, not by its name. /proc/PID/exe names a
// path in the caller's own mount namespace, which an unprivileged user can
// make anew (unshare -Urm, a tmpfs over /usr/local/bin). A caller in
// secretfs's mount namespace matches an exe entry when the path it runs
// matches and is, here, the very file it runs (device and inode). A caller
// in another mount namespace (a container) has another filesystem: its
// path matches only in a rule that also pins where it runs (cgroups), and
// never otherwise.
//
// A cgroup proves where a process runs only if nobody but root could have
// made it. On systemd hosts a user's user@UID.service subtree is delegated
// to that user, who can create any name below it (and chown it to a subuid
// of theirs). A cgroup in a subtree whose directory or cgroup.procs, at any
// level from the root down, is owned by a user other than root or writable
// by group or others is delegated: it matches no cgroups entry unless the
// rule says delegated: true (rootless containers), and it names no
// container in the audit.
//
// An exe check is defence in depth, not a boundary: a process that can
// ptrace or LD_PRELOAD an allowed program gets its rights.
package access

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/secretfs/secretfs/config"
)

// Rule is one entry of rules:.
type Rule struct {
	Index int    // 1-based, as in the file
	Path  string // the glob as written
	UID   *uint32
	GID   *uint32
	Mode  *uint32 // permission bits of files
	Allow *Allow

	path *regexp.Regexp
}

// Allow says who may open what a rule matches.
type Allow struct {
	UIDs    []uint32
	GIDs    []uint32
	Exe     []string
	Cgroups []string
	// Delegated lets a cgroup the caller may write match Cgroups.
	Delegated bool

	exe, cgroups []*regexp.Regexp
}

// Rules are the rules of a config file, in order.
type Rules struct{ list []*Rule }

type rawRule struct {
	Path  string    `yaml:"path"`
	UID   *uint32   `yaml:"uid"`
	GID   *uint32   `yaml:"gid"`
	Mode  *string   `yaml:"mode"`
	Allow *rawAllow `yaml:"allow"`
}

type rawAllow struct {
	UIDs      []uint32 `yaml:"uids"`
	GIDs      []uint32 `yaml:"gids"`
	Exe       []string `yaml:"exe"`
	Cgroups   []string `yaml:"cgroups"`
	Delegated bool     `yaml:"delegated"`
}

// Parse reads the rules: section of a config file. A bad rule (bad glob,
// mode, unknown key) is an error that names it.
func Parse(node *yaml.Node) (*Rules, error) {
	if node == nil {
		return &Rules{}, nil
	}
	var raw []rawRule
	if err := config.Decode(node, &raw); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	// An allow: whose entries are all commented out is null, and would
	// decode as no allow list at all, which lets everyone in.
	if node.Kind == yaml.SequenceNode {
		for i, m := range node.Content {
			for j := 0; m.Kind == yaml.MappingNode && j+1 < len(m.Content); j += 2 {
				if k, v := m.Content[j], m.Content[j+1]; k.Value == "allow" && v.Tag == "!!null" {
					return nil, fmt.Errorf("rules: rule %d: allow is empty: give uids, gids, exe or cgroups, or remove it", i+1)
				}
			}
		}
	}
	rs := &Rules{}
	for i, r := range raw {
		rule, err := compile(i+1, r)
		if err != nil {
			return nil, fmt.Errorf("rules: rule %d (path %q): %w", i+1, r.Path, err)
		}
		rs.list = append(rs.list, rule)
	}
	return rs, nil
}

func compile(index int, r rawRule) (*Rule, error) {
	if r.Path == "" {
		return nil, fmt.Errorf("no path")
	}
	if strings.Contains(r.Path, "#") {
		return nil, fmt.Errorf("a rule matches a secret and all its fields: write the secret's path, without #FIELD")
	}
	re, err := pathGlob(r.Path)
	if err != nil {
		return nil, err
	}
	rule := &Rule{Index: index, Path: r.Path, UID: r.UID, GID: r.GID, path: re}
	if r.Mode != nil {
		n, err := strconv.ParseUint(*r.Mode, 8, 32)
		if err != nil || n == 0 || n > 0o777 {
			return nil, fmt.Errorf("mode %q: want octal permission bits such as \"0440\"", *r.Mode)
		}
		m := uint32(n)
		rule.Mode = &m
	}
	if a := r.Allow; a != nil {
		rule.Allow = &Allow{UIDs: a.UIDs, GIDs: a.GIDs, Exe: a.Exe, Cgroups: a.Cgroups, Delegated: a.Delegated}
		for _, e := range a.Exe {
			rule.Allow.exe = append(rule.Allow.exe, anyGlob(e))
		}
		for _, c := range a.Cgroups {
			rule.Allow.cgroups = append(rule.Allow.cgroups, anyGlob(c))
		}
		if len(a.UIDs)+len(a.GIDs)+len(a.Exe)+len(a.Cgroups) == 0 {
			return nil, fmt.Errorf("allow lists nobody: give uids, gids, exe or cgroups")
		}
		if a.Delegated && len(a.Cgroups) == 0 {
			return nil, fmt.Errorf("delegated is about cgroups: give cgroups too, or remove it")
		}
	}
	return rule, nil
}

// pathGlob compiles a path glob: ** matches anything (across '/'), *
// anything within one segment, ? one character of one.
func pathGlob(glob string) (*regexp.Regexp, error) {
	if strings.Contains(glob, "***") || strings.HasPrefix(glob, "/") {
		return nil, fmt.Errorf("bad glob %q (a path below the mount: no leading /, no ***)", glob)
	}
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; {
		case c == '*' && i+1 < len(glob) && glob[i+1] == '*':
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// anyGlob compiles a glob in which * matches anything, '/' included.
func anyGlob(glob string) *regexp.Regexp {
	parts := strings.Split(glob, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// Match returns the first rule whose path matches a secret's path
// (PROVIDER/KEY, without field or version), or nil.
func (rs *Rules) Match(path string) *Rule {
	if rs == nil {
		return nil
	}
	for _, r := range rs.list {
		if r.path.MatchString(path) {
			return r
		}
	}
	return nil
}

// HasAllow reports whether any rule restricts who may open.
func (rs *Rules) HasAllow() bool {
	return rs != nil && slices.ContainsFunc(rs.list, func(r *Rule) bool { return r.Allow != nil })
}

// Len is how many rules there are.
func (rs *Rules) Len() int {
	if rs == nil {
		return 0
	}
	return len(rs.list)
}

// Caller is who opens: the FUSE request's ids, and what /proc says of the
// process (errors where it could not be read).
type Caller struct {
	PID      uint32
	UID, GID uint32
	Groups   []uint32
	Exe      string // the program's path, in the caller's mount namespace
	ExeErr   error
	// ExeFile is the program's file (what /proc/PID/exe leads to).
	ExeFile File
	// ExeHere: Exe names, in secretfs's mount namespace, the very file
	// the caller runs.
	ExeHere bool
	// MntNS is the caller's mount namespace (its inode); OtherMntNS says
	// it is not secretfs's.
	MntNS      uint64
	OtherMntNS bool
	Cgroup     string
	CgroupErr  error
	// DelegatedAt is, where the cgroup is delegated, the cgroup on its
	// path (it or one above) that is: see Delegated.
	DelegatedAt string
}

// File is which file a stat names: its device and inode.
type File struct{ Dev, Ino uint64 }

// Delegated reports whether the caller's cgroup lies in a delegated
// subtree: it, or a cgroup above it, has a directory or cgroup.procs owned
// by a user other than root or writable by group or others. Whoever owns
// or may write it can create cgroups below it with any name, and move
// processes into them (a user's user@UID.service on systemd hosts, and,
// through subuids, any uid that user maps). It is judged from the cgroup,
// whoever the caller is.
func (c Caller) Delegated() bool { return c.CgroupErr == nil && c.DelegatedAt != "" }

// Container is the id of the container the caller's cgroup names, or ""
// (no container, or a delegated cgroup, whose name the caller chose).
func (c Caller) Container() string {
	if c.CgroupErr != nil || c.Delegated() {
		return ""
	}
	return ContainerID(c.Cgroup)
}

// Name says which rule this is, for audit records and check-access.
func (r *Rule) Name() string { return fmt.Sprintf("%d:%s", r.Index, r.Path) }

// Permits reports whether c may open what r matches, and if not, why.
func (r *Rule) Permits(c Caller) (bool, string) {
	a := r.Allow
	if a == nil {
		return true, ""
	}
	if len(a.UIDs) > 0 && !slices.Contains(a.UIDs, c.UID) {
		return false, fmt.Sprintf("uid %d is not in %v", c.UID, a.UIDs)
	}
	if len(a.GIDs) > 0 && !slices.Contains(a.GIDs, c.GID) && !slices.ContainsFunc(c.Groups, func(g uint32) bool { return slices.Contains(a.GIDs, g) }) {
		return false, fmt.Sprintf("neither gid %d nor the groups %v are in %v", c.GID, c.Groups, a.GIDs)
	}
	if len(a.exe) > 0 {
		if c.ExeErr != nil {
			return false, fmt.Sprintf("the caller's executable cannot be read: %v", c.ExeErr)
		}
		if !slices.ContainsFunc(a.exe, func(re *regexp.Regexp) bool { return re.MatchString(c.Exe) }) {
			return false, fmt.Sprintf("executable %q matches none of %q", c.Exe, a.Exe)
		}
		switch {
		case c.OtherMntNS && len(a.cgroups) == 0:
			return false, fmt.Sprintf("executable %q is a path in another mount namespace, where any file may have that name: a rule allows a program there only with cgroups too", c.Exe)
		case !c.OtherMntNS && !c.ExeHere:
			return false, fmt.Sprintf("executable %q (device %d:%d inode %d) is not the file at that path in secretfs's mount namespace", c.Exe, unix.Major(c.ExeFile.Dev), unix.Minor(c.ExeFile.Dev), c.ExeFile.Ino)
		}
	}
	if len(a.cgroups) > 0 {
		if c.CgroupErr != nil {
			return false, fmt.Sprintf("the caller's cgroup cannot be read: %v", c.CgroupErr)
		}
		if !a.Delegated && c.Delegated() {
			return false, fmt.Sprintf("cgroup %q is in a delegated subtree (%s is not root's alone): its name may be anyone's choice, and it matches only a rule with delegated: true", c.Cgroup, c.DelegatedAt)
		}
		if !slices.ContainsFunc(a.cgroups, func(re *regexp.Regexp) bool { return re.MatchString(c.Cgroup) }) {
			return false, fmt.Sprintf("cgroup %q matches none of %q", c.Cgroup, a.Cgroups)
		}
	}
	return true, ""
}

// Attr is a file's owner and permission bits.
type Attr struct{ UID, GID, Mode uint32 }

func (a Attr) String() string { return fmt.Sprintf("%d:%d %04o", a.UID, a.GID, a.Mode) }

// Attr returns the owner and mode of the secret at path: those of the
// first rule that matches, each where it sets them, else def's.
func (rs *Rules) Attr(path string, def Attr) Attr {
	a := def
	if r := rs.Match(path); r != nil {
		a = r.apply(a)
	}
	return a
}

// apply sets what r sets of a file's owner and mode.
func (r *Rule) apply(a Attr) Attr { return a.With(r.UID, r.GID, r.Mode) }

// With is a with uid, gid and mode set where they are not nil (a rule's or
// a template's own settings).
func (a Attr) With(uid, gid, mode *uint32) Attr {
	if uid != nil {
		a.UID = *uid
	}
	if gid != nil {
		a.GID = *gid
	}
	if mode != nil {
		a.Mode = *mode
	}
	return a
}

// Combined returns the owner and mode of a file made of the secrets at
// paths (a template), no looser than any of theirs: where they share one
// owner, that owner, with only the bits every one of them grants; where
// their owners differ, self's (secretfs's user) with 0400, and why says
// so. A file made of no secret gets def.
func (rs *Rules) Combined(paths []string, def, self Attr) (a Attr, why string) {
	if len(paths) == 0 {
		return def, ""
	}
	a = rs.Attr(paths[0], def)
	for _, p := range paths[1:] {
		b := rs.Attr(p, def)
		if b.UID != a.UID || b.GID != a.GID {
			return Attr{UID: self.UID, GID: self.GID, Mode: 0o400},
				fmt.Sprintf("its secrets have different owners (%s is %d:%d, %s is %d:%d)", paths[0], a.UID, a.GID, p, b.UID, b.GID)
		}
		a.Mode &= b.Mode
	}
	return a, ""
}

// Own returns the owner and mode of a template at path made of the
// secrets at inputs: Combined, then what a rule for the template's own
// path sets, which may grant more (wider says what it grants beyond its
// secrets).
func (rs *Rules) Own(path string, inputs []string, def, self Attr) (a Attr, why, wider string) {
	a, why = rs.Combined(inputs, def, self)
	if r := rs.Match(path); r != nil {
		if b := r.apply(a); b != a {
			wider = Wider(b, a, fmt.Sprintf("rule %s", r.Name()))
			a = b
		}
	}
	return a, why, wider
}

// Wider says what b grants beyond a ("" if nothing), naming by whom.
func Wider(b, a Attr, by string) string {
	if b.UID == a.UID && b.GID == a.GID && b.Mode&^a.Mode == 0 {
		return ""
	}
	return fmt.Sprintf("%s makes it %s where its secrets allow %s", by, b, a)
}

// Decide checks an open of a file as the mount does: the rule of the
// file's own path (paths[0]) and, for a template, the rules of every secret
// it reads (the rest) must each permit the caller, which caller reads only
// if a rule asks. It returns the rule that denied and why, or, when none
// did, the rule of the file's own path (nil if none matches).
func (rs *Rules) Decide(paths []string, caller func() Caller) (r *Rule, denied bool, why string) {
	var c *Caller
	for i, p := range paths {
		m := rs.Match(p)
		if m == nil {
			continue
		}
		if i == 0 {
			r = m
		}
		if m.Allow == nil {
			continue
		}
		if c == nil {
			got := caller()
			c = &got
		}
		if ok, why := m.Permits(*c); !ok {
			return m, true, why
		}
	}
	return r, false, ""
}

// ModeAllows reports whether the kernel's check of mode bits
// (default_permissions) lets a caller do want (0o4 read, 0o1 enter) to a
// file of owner and mode a, as root may.
func ModeAllows(a Attr, c Caller, want uint32) bool {
	switch {
	case c.UID == 0:
		return true
	case c.UID == a.UID:
		return a.Mode&(want<<6) != 0
	case c.GID == a.GID || slices.Contains(c.Groups, a.GID):
		return a.Mode&(want<<3) != 0
	}
	return a.Mode&want != 0
}
