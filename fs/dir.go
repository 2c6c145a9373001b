package fs

import (
	"context"
	"slices"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/secretfs/secretfs/audit"
	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// dirInode returns the directory node for name below parent: the one the
// tree has, or a new one.
func (f *fsys) dirInode(ctx context.Context, parent *gofs.Inode, name, provider, dir string, out *fuse.EntryOut) *gofs.Inode {
	f.dirAttr(&out.Attr)
	out.SetEntryTimeout(f.cfg.DirTimeout)
	out.SetAttrTimeout(f.cfg.DirTimeout)
	if ch := parent.GetChild(name); ch != nil {
		if d, ok := ch.Operations().(*dirNode); ok && d.provider == provider && d.dir == dir {
			return ch
		}
	}
	return parent.NewInode(ctx, &dirNode{sys: f, provider: provider, dir: dir}, gofs.StableAttr{Mode: syscall.S_IFDIR})
}

// dirNode is a provider's directory, or a directory below it (dir is the
// key prefix without a trailing "/"; "" for the provider's top).
type dirNode struct {
	gofs.Inode
	readOnly
	sys      *fsys
	provider string
	dir      string
}

// path is name's path below the mount, as rules match it.
func (n *dirNode) path(name string) string { return n.provider + "/" + n.key(name) }

func (n *dirNode) key(name string) string {
	if n.dir == "" {
		return name
	}
	return n.dir + "/" + name
}

func (n *dirNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.sys.dirGetattr(out)
}

// shown is one name a directory shows, and what it stands for.
type shown struct {
	name  string // as it appears in the directory
	entry string // the listing's entry: "key" for a secret, "key/" for a directory
}

// showNames turns a provider's listing into the names a directory shows: a
// directory as itself, a secret as itself, and a secret that is also a
// directory as "name@" (the directory wins the plain name). A name that a
// path cannot reach again as itself is left out.
func showNames(l *cache.Listing) []shown {
	var out []shown
	seen := make(map[string]bool)
	for _, entry := range l.Names() {
		name, isDir := strings.CutSuffix(entry, "/")
		if !resolver.Listable(name) {
			continue
		}
		if !isDir && l.Has(entry+"/") {
			name += "@"
			if l.Has(name) {
				continue // a secret named exactly "name@" wins that name
			}
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, shown{name: name, entry: entry})
		}
	}
	slices.SortFunc(out, func(a, b shown) int { return strings.Compare(a.name, b.name) })
	return out
}

// Readdir lists the keys below the directory (see showNames), and reads
// the listed secrets ahead in batches where the provider can.
func (n *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	n.sys.cfg.Count("readdir")
	ctx, done := request(ctx, n.sys.cfg.Deadlines.RequestFor(n.provider))
	defer done()
	l, err := n.sys.known(ctx, n.provider, n.dir)
	if err == nil && !l.Complete() {
		l, err = n.sys.list(ctx, n.provider, n.dir)
	}
	switch resolver.KindOf(err) {
	case resolver.KindOK:
	case resolver.KindUnsupported:
		return gofs.NewListDirStream(dots(n.EmbeddedInode(), 0)), 0 // a provider that cannot list looks empty
	default:
		return nil, toErrno(n.sys.log, "readdir "+n.provider+":"+n.dir, err)
	}
	names := showNames(l)
	entries := dots(n.EmbeddedInode(), len(names))
	var files []string
	self := n.EmbeddedInode()
	hidden := n.sys.hiddenFrom(ctx)
	for _, s := range names {
		mode := uint32(syscall.S_IFREG)
		if strings.HasSuffix(s.entry, "/") {
			mode = syscall.S_IFDIR
		} else if hidden(n.provider + "/" + n.key(s.entry)) {
			continue // a caller its allow rule denies: no name, and nothing read ahead
		} else if len(files) < maxPrefetch {
			files = append(files, n.key(s.entry))
		}
		entries = append(entries, fuse.DirEntry{Name: s.name, Mode: mode, Ino: childIno(self, s.name)})
	}
	// `ls -l` or reading every file comes next, as a rule: read the
	// values in batches where the provider can, rather than one by one.
	if len(files) > 1 {
		refs := make([]string, len(files))
		for i, f := range files {
			refs[i] = resolver.Reference{Provider: n.provider, Key: f}.String()
		}
		if aerr := n.sys.record(ctx, audit.Record{Op: "readdir", Path: n.provider + "/" + n.dir, Refs: refs, Result: "ok"}); aerr != 0 {
			return nil, aerr
		}
		pctx, cancel := context.WithTimeout(ctx, n.sys.cfg.Deadlines.CallFor(n.provider))
		if err := n.sys.engine.Prefetch(pctx, n.provider, files); err != nil {
			n.sys.log.Debug("prefetch failed", "provider", n.provider, "dir", n.dir, "error", err)
		}
		cancel()
	}
	return gofs.NewListDirStream(entries), 0
}

// Lookup decides whether name is a directory or a secret (see the package
// documentation) and asks the engine as little as it can: what is known of
// this directory (its listing, or a probe's page; cached) tells directories
// and exact names; where a probe's page does not tell, a probe below the
// name does; anything else is read as a secret. The listing and the read
// each get their own budget.
func (n *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.sys.cfg.Count("lookup")
	if len(name) > maxName {
		return nil, syscall.ENAMETOOLONG
	}
	if in := n.sys.notifier.retiredNode(ctx, n.EmbeddedInode(), name, out); in != nil {
		return in, 0
	}
	ctx, done := request(ctx, n.sys.cfg.Deadlines.RequestFor(n.provider))
	defer done()
	op := "lookup " + n.provider + ":" + n.key(name)
	// canList is false when the listing cannot tell what exists here.
	canList := true
	l, err := n.sys.known(ctx, n.provider, n.dir)
	switch resolver.KindOf(err) {
	case resolver.KindOK:
		if l.Has(name + "/") {
			return n.sys.dirInode(ctx, n.EmbeddedInode(), name, n.provider, n.key(name), out), 0
		}
		exact := l.Has(name) && resolver.Listable(name)
		if !l.Complete() && !strings.Contains(name, "#") {
			// A probe's page does not tell all: probe below the name itself.
			// Anything there makes it a directory (the directory wins the
			// name), even when the page holds the name as a secret.
			if below, err := n.sys.known(ctx, n.provider, n.key(name)); err == nil && len(below.Names()) > 0 {
				return n.sys.dirInode(ctx, n.EmbeddedInode(), name, n.provider, n.key(name), out), 0
			}
			if !exact && strings.HasSuffix(name, "@") {
				// A secret named exactly "x@" the page did not show still
				// wins over the current version of "x". Its rules, and x's,
				// are checked before it is read.
				ref := resolver.Reference{Provider: n.provider, Key: n.key(name)}
				if errno := n.sys.gate(ctx, n.path(name), ref.String(), []string{secretPath(ref), n.provider + "/" + strings.TrimSuffix(ref.Key, "@")}); errno != 0 {
					return nil, errno
				}
				if _, err := n.sys.get(ctx, ref); err == nil {
					exact = true
				}
			}
		}
		if exact {
			// The exact name wins over every suffix form ("@", "@VERSION").
			return n.lookupSecret(ctx, name, resolver.Reference{Provider: n.provider, Key: n.key(name)}, false, out)
		}
	case resolver.KindUnsupported, resolver.KindPermission:
		canList = false
	case resolver.KindCanceled:
		return nil, syscall.EINTR
	default:
		// The listing is unavailable (and remembered so for a while); the
		// secret may still be readable.
		n.sys.log.Debug("listing failed during lookup", "op", op, "error", err)
	}
	rk, err := resolver.ParseKey(name)
	if err != nil {
		// A name the grammar rejects leaves a trace too.
		if aerr := n.sys.record(ctx, audit.Record{Op: "lookup", Path: n.path(name), Result: "invalid name"}); aerr != 0 {
			return nil, aerr
		}
		return nil, syscall.ENOENT
	}
	plain := rk.Version == "" && rk.Field == "" && !strings.HasSuffix(name, "@")
	ref := resolver.Reference{Provider: n.provider, Key: n.key(rk.Key), Version: rk.Version, Field: rk.Field}
	return n.lookupSecret(ctx, name, ref, plain && !canList, out)
}

// lookupSecret reads ref for the name. orDir: where the token may not list
// this directory, a plain name it may not read either can be a directory it
// may read below (a Vault policy on "secret/data/team/app" only).
func (n *dirNode) lookupSecret(ctx context.Context, name string, ref resolver.Reference, orDir bool, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	gen := n.sys.notifier.generation()
	// Who may not open it learns nothing of it either: not whether it
	// exists, nor its size.
	if errno := n.sys.gate(ctx, n.path(name), ref.String(), []string{secretPath(ref)}); errno != 0 {
		return nil, errno
	}
	v, err := n.sys.get(ctx, ref)
	if err == nil {
		if p := servedPath(ref, v.Secret); p != secretPath(ref) {
			if errno := n.sys.gate(ctx, n.path(name), ref.String(), []string{p}); errno != 0 {
				return nil, errno
			}
		}
		return n.sys.fileInode(ctx, n.EmbeddedInode(), name, content{ref: ref, path: n.path(name), secret: v.Secret, fresh: v.FreshFor, reads: []resolver.Reference{ref}}, gen, out), 0
	}
	kind := resolver.KindOf(err)
	if orDir && (kind == resolver.KindNotFound || kind == resolver.KindPermission) {
		return n.sys.dirInode(ctx, n.EmbeddedInode(), name, n.provider, n.key(name), out), 0
	}
	if kind == resolver.KindNotFound && ref.Version == "" && ref.Field == "" && !strings.HasSuffix(name, "@") {
		// Not in this directory's listing and not a secret: it may still be
		// a directory the listing leaves out (a Vault mount of another
		// engine) or that appeared since the listing was cached. One that
		// cannot be listed (a Vault database mount) is a directory of
		// names known only to whoever reads them.
		if below, lerr := n.sys.known(ctx, n.provider, n.key(name)); lerr == nil && len(below.Names()) > 0 || resolver.KindOf(lerr) == resolver.KindUnsupported {
			return n.sys.dirInode(ctx, n.EmbeddedInode(), name, n.provider, n.key(name), out), 0
		}
	}
	errno := toErrno(n.sys.log, "lookup "+ref.String(), err)
	// A failed read never reaches open: it is recorded here.
	if aerr := n.sys.record(ctx, audit.Record{Op: "lookup", Ref: ref.String(), Path: n.path(name), Result: errno.Error()}); aerr != 0 {
		return nil, aerr
	}
	return nil, errno
}
