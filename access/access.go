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
//	      exe: ["/usr/local/bin/myapp"]  # the caller's /proc/PID/exe; * matches anything
//	      cgroups: ["*/docker-3f9c*"]    # the caller's cgroup path; * matches anything
//
// A rule matches a secret, PROVIDER/KEY: every name that reads it (its
// fields "#F", its versions "@V", the "NAME@" of a name that is also a
// directory) is governed by the same rule, so no other spelling of a name
// gets around it. The first rule whose path matches decides; a secret no
// rule matches keeps the global flags. Inside allow every listed kind must match, and within a
// kind any entry may. A caller whose executable or cgroup cannot be read is
// denied where the rule asks for it, never let through.
//
// An exe check is defence in depth, not a boundary: the kernel reports the
// path of the program, and a process that can ptrace or LD_PRELOAD an allowed
// program gets its rights.
package access

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

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
	UIDs    []uint32 `yaml:"uids"`
	GIDs    []uint32 `yaml:"gids"`
	Exe     []string `yaml:"exe"`
	Cgroups []string `yaml:"cgroups"`
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
		rule.Allow = &Allow{UIDs: a.UIDs, GIDs: a.GIDs, Exe: a.Exe, Cgroups: a.Cgroups}
		for _, e := range a.Exe {
			rule.Allow.exe = append(rule.Allow.exe, anyGlob(e))
		}
		for _, c := range a.Cgroups {
			rule.Allow.cgroups = append(rule.Allow.cgroups, anyGlob(c))
		}
		if len(a.UIDs)+len(a.GIDs)+len(a.Exe)+len(a.Cgroups) == 0 {
			return nil, fmt.Errorf("allow lists nobody: give uids, gids, exe or cgroups")
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
	PID       uint32
	UID, GID  uint32
	Groups    []uint32
	Exe       string
	ExeErr    error
	Cgroup    string
	CgroupErr error
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
	}
	if len(a.cgroups) > 0 {
		if c.CgroupErr != nil {
			return false, fmt.Sprintf("the caller's cgroup cannot be read: %v", c.CgroupErr)
		}
		if !slices.ContainsFunc(a.cgroups, func(re *regexp.Regexp) bool { return re.MatchString(c.Cgroup) }) {
			return false, fmt.Sprintf("cgroup %q matches none of %q", c.Cgroup, a.Cgroups)
		}
	}
	return true, ""
}
