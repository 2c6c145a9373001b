package fs

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/secretfs/secretfs/audit"
	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

// content is what a file shows.
type content struct {
	ref    resolver.Reference // the secret, or templates:NAME
	path   string             // below the mount, as looked up
	secret resolver.Secret
	fresh  time.Duration        // how long it stays fresh
	reads  []resolver.Reference // the values it is made of: a change of one invalidates it
	served []string             // for a template, the secret each read returned, as rules match it
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
	if f.guarded(c.paths()) {
		valid = 0 // every caller's lookup and stat reaches gate
	}
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
		if old, ok := existing.Operations().(*fileNode); ok && old.ref == c.ref && old.shows(c.secret) && !old.wasDeleted.Load() {
			node = old
		}
	}
	if node == nil {
		node = &fileNode{sys: f, ref: c.ref, secret: c.secret, parent: parent, name: name, path: c.path, tmpl: c.tmpl, reads: c.reads, served: c.served}
		existing = nil
	}
	node.setValid(valid)
	node.seen()
	ino := existing
	if ino == nil {
		ino = parent.NewInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFREG})
	}
	// Watched once made: the notifier may tell the kernel of it at once,
	// and go-fuse gives an inode its id in NewInode.
	for _, r := range c.reads {
		r.Field = ""
		f.notifier.watch(r, parent, name, node, gen)
	}
	return ino
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
	served []string             // for a template, what rules match of each read (see content)
	// validUntil (unix nanoseconds) is until when the kernel may keep the
	// attributes.
	validUntil atomic.Int64
	// lastSeen (unix nanoseconds) is when the kernel last asked about the
	// node: a lookup, a getattr, an open (see notifier.sweep).
	lastSeen atomic.Int64
	// wasDeleted: the kernel was told the node is deleted (its value
	// changed); a lookup shows a new node, even for the same bytes.
	wasDeleted atomic.Bool
	holdMu     sync.Mutex
	released   []func() // guarded by holdMu; what keeps the values it reads in use while the kernel holds the node
	gone       bool     // guarded by holdMu; the kernel let go of the node
}

// paths are what rules match for c: the secret served, and for a template
// the template and every secret it read.
func (c content) paths() []string {
	if c.tmpl == nil {
		return []string{servedPath(c.ref, c.secret)}
	}
	return append([]string{TemplatePath(c.tmpl)}, c.served...)
}

// paths are what rules match for the node (see content.paths).
func (n *fileNode) paths() []string {
	return content{ref: n.ref, secret: n.secret, tmpl: n.tmpl, served: n.served}.paths()
}

func (n *fileNode) shows(s resolver.Secret) bool {
	return n.secret.Version == s.Version && n.secret.Key == s.Key && n.secret.Created.Equal(s.Created) && bytes.Equal(n.secret.Value, s.Value)
}

// OnForget drops the node's name from the notifier (unless a newer node
// shows that name now), so that names nobody uses any more cost no memory,
// and lets go of the values it kept in use.
func (n *fileNode) OnForget() {
	n.holdMu.Lock()
	release := n.released
	n.released, n.gone = nil, true
	n.holdMu.Unlock()
	for _, f := range release {
		f()
	}
	if n.parent == nil {
		return
	}
	for _, r := range n.reads {
		r.Field = ""
		n.sys.notifier.unwatch(r, n.parent, n.name, n)
	}
}

// holder is the engine's optional ability to keep a value in use while
// nobody reads it (cache.Cache.Hold).
type holder interface {
	Hold(ref resolver.Reference) (release func())
}

// hold keeps the values the node reads in use while the kernel holds the
// node, found held by something other than its name (see notifier): a
// program that read the file once and waits for an inotify event reads
// nothing more, and must still hear of a change.
func (n *fileNode) hold() {
	h, ok := n.sys.engine.(holder)
	if !ok {
		return
	}
	n.holdMu.Lock()
	defer n.holdMu.Unlock()
	if n.released != nil || n.gone {
		return
	}
	for _, r := range n.reads {
		n.released = append(n.released, h.Hold(r))
	}
}

func (n *fileNode) deleted() { n.wasDeleted.Store(true) }

func (n *fileNode) seen() { n.lastSeen.Store(time.Now().UnixNano()) }

func (n *fileNode) seenSince(t time.Time) bool { return n.lastSeen.Load() >= t.UnixNano() }

func (n *fileNode) forgotten() bool {
	n.holdMu.Lock()
	defer n.holdMu.Unlock()
	return n.gone
}

func (n *fileNode) mountPath() string { return n.path }

func (n *fileNode) entryOut(out *fuse.EntryOut) {
	n.sys.fileAttr(servedPath(n.ref, n.secret), n.tmpl, n.secret, &out.Attr)
}

func (n *fileNode) setValid(d time.Duration) { n.validUntil.Store(time.Now().Add(d).UnixNano()) }

func (n *fileNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.sys.cfg.Count("getattr")
	n.seen()
	paths := n.paths()
	guarded := n.sys.guarded(paths)
	if guarded {
		// Kept by the kernel for nobody: checked for every caller.
		if errno := n.sys.gate(ctx, n.path, n.ref.String(), paths); errno != 0 {
			return errno
		}
	}
	n.sys.fileAttr(servedPath(n.ref, n.secret), n.tmpl, n.secret, &out.Attr)
	if !guarded {
		out.SetTimeout(max(time.Until(time.Unix(0, n.validUntil.Load())), 0))
	}
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
	n.seen()
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
	// The rule of the file decides, and for a template so do the rules of
	// every secret it read: a template is no way around them.
	who := n.sys.lazyCaller(ctx)
	r, denied, why := n.sys.policy.Load().rules.Decide(n.paths(), who.get)
	if r != nil {
		rec.Rule = r.Name()
	}
	if denied {
		rec.Op, rec.Result, rec.Reason = "denied", syscall.EACCES.Error(), why
	}
	if errno := n.sys.recordAs(rec, who.c, ctx); errno != 0 {
		return nil, 0, errno
	}
	if denied {
		return nil, 0, syscall.EACCES
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
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
