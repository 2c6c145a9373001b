package fs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/secretfs/secretfs/access"
	"github.com/secretfs/secretfs/audit"
	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

// Config sets what the filesystem shows. Zero modes take the defaults.
type Config struct {
	UID, GID uint32
	FileMode uint32 // permission bits of files; default 0400
	DirMode  uint32 // permission bits of directories; default 0500
	// DirTimeout is how long the kernel may keep directory entries and
	// attributes. Default 1s. Files are kept for half of their value's
	// remaining freshness instead.
	DirTimeout time.Duration
	// Deadlines bound how long a request waits: each engine call its own
	// budget, and a whole request (a lookup, a readdir, a template's
	// fetch) twice a call's, however many steps it takes.
	Deadlines resolver.Deadlines
	Logger    *slog.Logger
	// Audit, when set, gets one record for every open of a secret: who
	// (uid, gid, pid, program, cgroup), what (the reference and path) and
	// the outcome, never a value. A record that cannot be written fails
	// the open (EIO). It puts the mount in audit mode.
	Audit Auditor
	// Rules set owners and modes per path, and who may open (allow). The
	// mount runs in audit mode when a rule has allow.
	Rules *access.Rules
	// Identities reads callers' programs and cgroups; one is made if nil.
	Identities *access.Identities
	// Templates appear as MOUNT/templates/NAME.
	Templates []*templates.Template
	// Count, when set, is told of every FUSE request that reaches the
	// daemon, by operation (metrics).
	Count func(op string)
}

// Auditor is where audit records go.
type Auditor interface {
	Write(audit.Record) error
}

// Engine is what the filesystem needs of the cache.
type Engine interface {
	Get(ctx context.Context, ref resolver.Reference) (cache.Value, error)
	List(ctx context.Context, provider, dir string) (*cache.Listing, time.Duration, error)
	Probe(ctx context.Context, provider, dir string) (*cache.Listing, time.Duration, error)
	Prefetch(ctx context.Context, provider string, keys []string) error
	Names() []string
	OnChange(f func(cache.Change))
}

// maxPrefetch bounds how many secrets one directory listing reads ahead.
const maxPrefetch = 200

// fsys is shared by all nodes of one mount.
type fsys struct {
	engine   Engine
	cfg      Config
	log      *slog.Logger
	started  time.Time
	notifier *notifier
	// checkOpens is the audit mode: every open reaches the daemon. It is
	// fixed for the life of the mount (the kernel decides NO_OPEN once).
	checkOpens bool
	rules      atomic.Pointer[access.Rules]
	// auditFailed (unix seconds) rate-limits the log of audit failures.
	auditFailed atomic.Int64
}

// NewRoot returns the root node of a secretfs tree.
func NewRoot(e Engine, cfg Config) gofs.InodeEmbedder {
	return &rootNode{sys: newFsys(e, cfg)}
}

func newFsys(e Engine, cfg Config) *fsys {
	if cfg.FileMode == 0 {
		cfg.FileMode = 0o400
	}
	if cfg.DirMode == 0 {
		cfg.DirMode = 0o500
	}
	if cfg.DirTimeout == 0 {
		cfg.DirTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Count == nil {
		cfg.Count = func(string) {}
	}
	if cfg.Identities == nil {
		cfg.Identities = &access.Identities{}
	}
	f := &fsys{engine: e, cfg: cfg, log: cfg.Logger, started: time.Now(), notifier: newNotifier(cfg.Logger),
		checkOpens: cfg.Audit != nil || cfg.Rules.HasAllow()}
	f.rules.Store(cfg.Rules)
	e.OnChange(f.notifier.changed)
	return f
}

// AuditMode reports whether a mount with cfg runs in audit mode, where every
// open reaches the daemon.
func AuditMode(cfg Config) bool { return cfg.Audit != nil || cfg.Rules.HasAllow() }

// setRules replaces the rules (a reload). A mount in the fast mode cannot
// take allow rules: the kernel decided NO_OPEN for its life.
func (f *fsys) setRules(rs *access.Rules) error {
	if rs.HasAllow() && !f.checkOpens {
		return errors.New("allow rules need the audit mode, which the kernel fixes per mount: restart to apply them")
	}
	f.rules.Store(rs)
	f.notifier.everything() // owners and modes the kernel holds may have changed
	return nil
}

// dirGetattr answers a directory's getattr: every directory looks the same.
func (f *fsys) dirGetattr(out *fuse.AttrOut) syscall.Errno {
	f.cfg.Count("getattr")
	f.dirAttr(&out.Attr)
	out.SetTimeout(f.cfg.DirTimeout)
	return 0
}

func (f *fsys) dirAttr(out *fuse.Attr) {
	out.Mode = syscall.S_IFDIR | f.cfg.DirMode
	out.Nlink = 2
	out.Uid, out.Gid = f.cfg.UID, f.cfg.GID
	out.SetTimes(nil, &f.started, &f.started)
}

// secretPath is what rules match: the secret a reference reads, as
// PROVIDER/KEY, whatever name (field, version, "NAME@") reads it.
func secretPath(ref resolver.Reference) string { return ref.Provider + "/" + ref.Key }

// servedPath is what rules match for a file showing s, read for ref: the
// secret actually served, which for KEY@VERSION may be the secret named
// exactly so rather than KEY (where no listing told them apart).
func servedPath(ref resolver.Reference, s resolver.Secret) string {
	if s.Key != "" {
		return ref.Provider + "/" + s.Key
	}
	return secretPath(ref)
}

// fileAttr fills the attributes of a file showing s of the secret at
// secret (see secretPath): owner and mode from the first rule that
// matches, else the global ones.
func (f *fsys) fileAttr(secret string, tmpl *templates.Template, s resolver.Secret, out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | f.cfg.FileMode
	out.Nlink = 1
	out.Uid, out.Gid = f.cfg.UID, f.cfg.GID
	if r := f.rules.Load().Match(secret); r != nil {
		if r.UID != nil {
			out.Uid = *r.UID
		}
		if r.GID != nil {
			out.Gid = *r.GID
		}
		if r.Mode != nil {
			out.Mode = syscall.S_IFREG | *r.Mode
		}
	}
	if tmpl != nil { // a template's own owner and mode win
		if tmpl.UID != nil {
			out.Uid = *tmpl.UID
		}
		if tmpl.GID != nil {
			out.Gid = *tmpl.GID
		}
		if tmpl.Mode != nil {
			out.Mode = syscall.S_IFREG | *tmpl.Mode
		}
	}
	out.Size = uint64(len(s.Value))
	out.Blocks = (out.Size + 511) / 512
	mtime := f.started
	if !s.Created.IsZero() {
		mtime = s.Created
	}
	out.SetTimes(nil, &mtime, &mtime)
}

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

// request is the context of one request on provider's tree: no interrupt
// but a dying reader's (see detach), and at most Deadlines.RequestFor, the
// longest a reader waits, whatever steps it takes.
func (f *fsys) request(ctx context.Context, provider string) (context.Context, context.CancelFunc) {
	d, stop := detach(ctx)
	c, cancel := context.WithTimeout(d, f.cfg.Deadlines.RequestFor(provider))
	return c, func() { cancel(); stop() }
}

// budget bounds one engine call of a request (made with request) by d.
func budget(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// list waits at most a call's budget for the listing of dir.
func (f *fsys) list(ctx context.Context, provider, dir string) (*cache.Listing, error) {
	ctx, cancel := budget(ctx, f.cfg.Deadlines.CallFor(provider))
	defer cancel()
	l, _, err := f.engine.List(ctx, provider, dir)
	return l, err
}

// known waits at most a call's budget for what is known of dir without a
// costly listing: for a provider that probes (resolver.Prober), one page
// below it, which may not be complete; for others, its listing.
func (f *fsys) known(ctx context.Context, provider, dir string) (*cache.Listing, error) {
	ctx, cancel := budget(ctx, f.cfg.Deadlines.CallFor(provider))
	defer cancel()
	l, _, err := f.engine.Probe(ctx, provider, dir)
	if resolver.KindOf(err) == resolver.KindUnsupported {
		l, _, err = f.engine.List(ctx, provider, dir)
	}
	return l, err
}

// get waits at most a read's budget for the value of ref.
func (f *fsys) get(ctx context.Context, ref resolver.Reference) (cache.Value, error) {
	ctx, cancel := budget(ctx, f.cfg.Deadlines.FetchFor(ref))
	defer cancel()
	return f.engine.Get(ctx, ref)
}

// rootNode lists the enabled providers.
type rootNode struct {
	gofs.Inode
	readOnly
	sys *fsys
}

func (n *rootNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.sys.dirGetattr(out)
}

func (n *rootNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	n.sys.cfg.Count("readdir")
	names := n.sys.engine.Names()
	if len(n.sys.cfg.Templates) > 0 {
		names = append(slices.Clone(names), TemplatesDir)
	}
	entries := dots(n.EmbeddedInode(), len(names))
	for _, p := range names {
		entries = append(entries, fuse.DirEntry{Name: p, Mode: syscall.S_IFDIR, Ino: childIno(n.EmbeddedInode(), p)})
	}
	return gofs.NewListDirStream(entries), 0
}

func (n *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.sys.cfg.Count("lookup")
	if len(name) > maxName {
		return nil, syscall.ENAMETOOLONG
	}
	if n.sys.isTemplates(name) {
		n.sys.dirAttr(&out.Attr)
		out.SetEntryTimeout(n.sys.cfg.DirTimeout)
		out.SetAttrTimeout(n.sys.cfg.DirTimeout)
		if ch := n.GetChild(name); ch != nil {
			return ch, 0
		}
		return n.NewInode(ctx, &templatesNode{sys: n.sys}, gofs.StableAttr{Mode: syscall.S_IFDIR}), 0
	}
	if !slices.Contains(n.sys.engine.Names(), name) {
		return nil, syscall.ENOENT
	}
	return n.sys.dirInode(ctx, n.EmbeddedInode(), name, name, "", out), 0
}

// dots returns a listing's first entries, "." and "..", with room for n
// more.
func dots(self *gofs.Inode, n int) []fuse.DirEntry {
	parentIno := self.StableAttr().Ino
	if _, parent := self.Parent(); parent != nil {
		parentIno = parent.StableAttr().Ino
	}
	out := make([]fuse.DirEntry, 0, n+2)
	return append(out,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: self.StableAttr().Ino},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parentIno})
}

// childIno is the inode number of a child the tree holds, or 0 (go-fuse
// then tells the kernel it is unknown).
func childIno(parent *gofs.Inode, name string) uint64 {
	if ch := parent.GetChild(name); ch != nil {
		return ch.StableAttr().Ino
	}
	return 0
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
	ctx, done := n.sys.request(ctx, n.provider)
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
	for _, s := range names {
		mode := uint32(syscall.S_IFREG)
		if strings.HasSuffix(s.entry, "/") {
			mode = syscall.S_IFDIR
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
		pctx, cancel := budget(ctx, n.sys.cfg.Deadlines.CallFor(n.provider))
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
	ctx, done := n.sys.request(ctx, n.provider)
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
				// wins over the current version of "x".
				ref := resolver.Reference{Provider: n.provider, Key: n.key(name)}
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
	v, err := n.sys.get(ctx, ref)
	if err == nil {
		return n.sys.fileInode(ctx, n.EmbeddedInode(), name, content{ref: ref, path: n.path(name), secret: v.Secret, fresh: v.FreshFor, reads: []resolver.Reference{ref}}, gen, out), 0
	}
	kind := resolver.KindOf(err)
	if orDir && (kind == resolver.KindNotFound || kind == resolver.KindPermission) {
		return n.sys.dirInode(ctx, n.EmbeddedInode(), name, n.provider, n.key(name), out), 0
	}
	if kind == resolver.KindNotFound && ref.Version == "" && ref.Field == "" && !strings.HasSuffix(name, "@") {
		// Not in this directory's listing and not a secret: it may still be
		// a directory the listing leaves out (a Vault mount of another
		// engine) or that appeared since the listing was cached.
		if below, lerr := n.sys.known(ctx, n.provider, n.key(name)); lerr == nil && len(below.Names()) > 0 {
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

// content is what a file shows.
type content struct {
	ref    resolver.Reference // the secret, or templates:NAME
	path   string             // below the mount, as looked up
	secret resolver.Secret
	fresh  time.Duration        // how long it stays fresh
	reads  []resolver.Reference // the values it is made of: a change of one invalidates it
	tmpl   *templates.Template  // the template it was rendered from, if any
}

// fileInode returns the node for name in parent showing c: the one the
// kernel has when it shows the same content, else a new node (a new inode),
// so that a descriptor open on the old one keeps reading the old bytes.
// The kernel keeps the entry for half of the content's remaining
// freshness: a name in use is looked up again, and so counted as read,
// before it expires.
func (f *fsys) fileInode(ctx context.Context, parent *gofs.Inode, name string, c content, gen uint64, out *fuse.EntryOut) *gofs.Inode {
	valid := c.fresh / 2
	if f.notifier.generation() != gen {
		// A value changed while this lookup was answered: the kernel must
		// not keep an answer that may already be old.
		valid = 0
	}
	f.fileAttr(servedPath(c.ref, c.secret), c.tmpl, c.secret, &out.Attr)
	out.SetEntryTimeout(valid)
	out.SetAttrTimeout(valid)
	var node *fileNode
	existing := parent.GetChild(name)
	if existing != nil {
		if old, ok := existing.Operations().(*fileNode); ok && old.ref == c.ref && old.shows(c.secret) {
			node = old
		}
	}
	if node == nil {
		node = &fileNode{sys: f, ref: c.ref, secret: c.secret, parent: parent, name: name, path: c.path, tmpl: c.tmpl, reads: c.reads}
		existing = nil
	}
	node.setValid(valid)
	for _, r := range c.reads {
		r.Field = ""
		f.notifier.watch(r, parent, name, node, gen)
	}
	if existing != nil {
		return existing
	}
	return parent.NewInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFREG})
}

// fileNode is one version of one secret's content (with its field). Its
// bytes never change: a new value is a new node.
type fileNode struct {
	gofs.Inode
	readOnly
	sys    *fsys
	ref    resolver.Reference
	secret resolver.Secret
	parent *gofs.Inode // where it was looked up, as name
	name   string
	path   string               // below the mount: PROVIDER/DIR/NAME
	tmpl   *templates.Template  // the template it was rendered from, if any
	reads  []resolver.Reference // the values it is made of
	// validUntil (unix nanoseconds) is until when the kernel may keep the
	// attributes.
	validUntil atomic.Int64
}

func (n *fileNode) shows(s resolver.Secret) bool {
	return n.secret.Version == s.Version && n.secret.Key == s.Key && n.secret.Created.Equal(s.Created) && bytes.Equal(n.secret.Value, s.Value)
}

// OnForget drops the node's name from the notifier (unless a newer node
// shows that name now), so that names nobody uses any more cost no memory.
func (n *fileNode) OnForget() {
	if n.parent == nil {
		return
	}
	for _, r := range n.reads {
		r.Field = ""
		n.sys.notifier.unwatch(r, n.parent, n.name, n)
	}
}

func (n *fileNode) setValid(d time.Duration) { n.validUntil.Store(time.Now().Add(d).UnixNano()) }

func (n *fileNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.sys.cfg.Count("getattr")
	n.sys.fileAttr(servedPath(n.ref, n.secret), n.tmpl, n.secret, &out.Attr)
	out.SetTimeout(max(time.Until(time.Unix(0, n.validUntil.Load())), 0))
	return 0
}

// Open answers ENOSYS in the fast mode: the kernel then never sends OPEN
// again on this mount, and serves warm reads from its page cache without a
// round trip. In audit mode every open reaches here: the allow rule that
// matches is checked, a record is written through (an open whose record
// cannot be written fails with EIO), and the data still comes from the
// page cache.
func (n *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	n.sys.cfg.Count("open")
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0 {
		if errno := n.sys.record(ctx, audit.Record{Op: "denied", Ref: n.ref.String(), Path: n.path, Result: syscall.EROFS.Error()}); errno != 0 {
			return nil, 0, errno
		}
		return nil, 0, syscall.EROFS
	}
	if !n.sys.checkOpens {
		return nil, 0, syscall.ENOSYS
	}
	rec := audit.Record{Op: "open", Ref: n.ref.String(), Path: n.path, Result: "ok"}
	denied := false
	var caller *access.Caller
	// The rule of the file decides, and for a template so do the rules of
	// every secret it read: a template is no way around them.
	paths := []string{servedPath(n.ref, n.secret)}
	if n.tmpl != nil {
		for _, r := range n.reads {
			paths = append(paths, secretPath(r))
		}
	}
	rules := n.sys.rules.Load()
	for i, p := range paths {
		r := rules.Match(p)
		if r == nil {
			continue
		}
		if i == 0 {
			rec.Rule = r.Name()
		}
		if r.Allow == nil || denied {
			continue
		}
		if caller == nil {
			c := n.sys.caller(ctx)
			caller = &c
		}
		if ok, why := r.Permits(*caller); !ok {
			denied = true
			rec.Op, rec.Result, rec.Reason, rec.Rule = "denied", syscall.EACCES.Error(), why, r.Name()
		}
	}
	if errno := n.sys.recordAs(rec, caller, ctx); errno != 0 {
		return nil, 0, errno
	}
	if denied {
		return nil, 0, syscall.EACCES
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// caller is who sent the request in ctx.
func (f *fsys) caller(ctx context.Context) access.Caller {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		// Nobody known: no uid, gid, program or cgroup that a rule lists.
		return access.Caller{UID: math.MaxUint32, GID: math.MaxUint32, ExeErr: errors.New("no caller"), CgroupErr: errors.New("no caller")}
	}
	return f.cfg.Identities.Caller(c.Pid, c.Uid, c.Gid)
}

// record writes rec, with who asked, to the audit trail (if there is one).
// It fails closed: a record that cannot be written is EIO for the request,
// and logged at most once every 10s.
func (f *fsys) record(ctx context.Context, rec audit.Record) syscall.Errno {
	return f.recordAs(rec, nil, ctx)
}

// recordAs is record with the caller already known (nil: read it).
func (f *fsys) recordAs(rec audit.Record, known *access.Caller, ctx context.Context) syscall.Errno {
	if f.cfg.Audit == nil {
		return 0
	}
	var c access.Caller
	if known != nil {
		c = *known
	} else {
		c = f.caller(ctx)
	}
	rec.Time = time.Now()
	rec.UID, rec.GID, rec.PID, rec.Exe, rec.Cgroup = c.UID, c.GID, c.PID, c.Exe, c.Cgroup
	rec.Container = access.ContainerID(c.Cgroup)
	if err := f.cfg.Audit.Write(rec); err != nil {
		now := time.Now().Unix()
		if last := f.auditFailed.Load(); now-last >= 10 && f.auditFailed.CompareAndSwap(last, now) {
			f.log.Error("audit record not written; refusing reads until it can be (fail closed)", "error", err)
		}
		return syscall.EIO
	}
	return 0
}

// Flush says ENOSYS once: the kernel then stops sending FLUSH on close for
// this mount (there is nothing to flush), which saves a round trip per close.
func (n *fileNode) Flush(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// Read serves the node's own bytes: the page cache is filled from here.
func (n *fileNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.sys.cfg.Count("read")
	v := n.secret.Value
	if off >= int64(len(v)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(v)))
	return fuse.ReadResultData(v[off:end]), 0
}

// readOnly answers as a read-only filesystem does: EROFS to every change
// (the mount is also read-only in the kernel; this answers callers that
// reach the nodes directly), success to fsync (nothing is ever dirty), and
// statfs with the sizes other filesystems give.
type readOnly struct{}

func (readOnly) Fsync(context.Context, gofs.FileHandle, uint32) syscall.Errno { return 0 }

func (readOnly) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = maxName
	return 0
}

// maxName is the longest name a directory holds, as on other filesystems.
const maxName = 255

func (readOnly) Setattr(context.Context, gofs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}
func (readOnly) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}
func (readOnly) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (readOnly) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (readOnly) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }
func (readOnly) Rmdir(context.Context, string) syscall.Errno  { return syscall.EROFS }
func (readOnly) Rename(context.Context, string, gofs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}
func (readOnly) Symlink(context.Context, string, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (readOnly) Link(context.Context, gofs.InodeEmbedder, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (readOnly) Setxattr(context.Context, string, []byte, uint32) syscall.Errno { return syscall.EROFS }
func (readOnly) Removexattr(context.Context, string) syscall.Errno              { return syscall.EROFS }
