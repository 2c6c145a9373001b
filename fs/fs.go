package fs

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/secretfs/secretfs/resolver"
)

// Config sets what the filesystem shows. Zero modes take the defaults.
type Config struct {
	UID, GID uint32
	FileMode uint32 // permission bits of files; default 0400
	DirMode  uint32 // permission bits of directories; default 0500
	// DirTimeout is how long the kernel may cache directory entries and
	// attributes; files are never cached by the kernel. Default 1s.
	DirTimeout time.Duration
	// Timeout bounds a whole lookup, which may ask the backend more than
	// once (the listing, the secret); default resolver.DefaultTimeout.
	Timeout time.Duration
	Logger  *slog.Logger
	// Audit, when set, gets one record for every open of a secret: who
	// (uid, gid, pid), what (the reference) and the outcome. Never a value.
	Audit *slog.Logger
}

// Resolver is what the filesystem needs of resolver.Resolver.
type Resolver interface {
	Get(ctx context.Context, ref resolver.Reference) (resolver.Secret, error)
	List(ctx context.Context, provider, dir string) ([]string, error)
	Prefetch(ctx context.Context, provider string, keys []string) error
	Names() []string
}

// maxPrefetch bounds how many secrets one directory listing reads ahead.
const maxPrefetch = 200

// fsys is shared by all nodes of one mount.
type fsys struct {
	r       Resolver
	cfg     Config
	log     *slog.Logger
	started time.Time
}

// NewRoot returns the root node of a secretfs tree.
func NewRoot(r Resolver, cfg Config) gofs.InodeEmbedder {
	if cfg.FileMode == 0 {
		cfg.FileMode = 0o400
	}
	if cfg.DirMode == 0 {
		cfg.DirMode = 0o500
	}
	if cfg.DirTimeout == 0 {
		cfg.DirTimeout = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = resolver.DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &fsys{r: r, cfg: cfg, log: cfg.Logger, started: time.Now()}
	return &rootNode{fs: f}
}

// ino derives a stable inode number from a node's kind and path, so that
// go-fuse reuses the inode of a name looked up again.
func ino(kind byte, path string) uint64 {
	h := fnv.New64a()
	h.Write([]byte{kind})
	h.Write([]byte(path))
	n := h.Sum64()
	if n <= 1 { // 1 is the root
		n += 2
	}
	return n
}

func (f *fsys) dirAttr(out *fuse.Attr) {
	out.Mode = syscall.S_IFDIR | f.cfg.DirMode
	out.Nlink = 2
	out.Uid, out.Gid = f.cfg.UID, f.cfg.GID
	out.SetTimes(nil, &f.started, &f.started)
}

func (f *fsys) fileAttr(s resolver.Secret, out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | f.cfg.FileMode
	out.Nlink = 1
	out.Uid, out.Gid = f.cfg.UID, f.cfg.GID
	out.Size = uint64(len(s.Value))
	out.Blocks = (out.Size + 511) / 512
	mtime := f.started
	if !s.Created.IsZero() {
		mtime = s.Created
	}
	out.SetTimes(nil, &mtime, &mtime)
}

func (f *fsys) newDir(ctx context.Context, parent *gofs.Inode, provider, dir string, out *fuse.EntryOut) *gofs.Inode {
	f.dirAttr(&out.Attr)
	out.SetEntryTimeout(f.cfg.DirTimeout)
	out.SetAttrTimeout(f.cfg.DirTimeout)
	node := &dirNode{fs: f, provider: provider, dir: dir}
	return parent.NewInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino('d', provider+"/"+dir)})
}

// rootNode lists the enabled providers.
type rootNode struct {
	gofs.Inode
	readOnly
	fs *fsys
}

func (n *rootNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.dirAttr(&out.Attr)
	out.SetTimeout(n.fs.cfg.DirTimeout)
	return 0
}

func (n *rootNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	names := n.fs.r.Names()
	entries := make([]fuse.DirEntry, 0, len(names))
	for _, p := range names {
		entries = append(entries, fuse.DirEntry{Name: p, Mode: syscall.S_IFDIR, Ino: ino('d', p+"/")})
	}
	return gofs.NewListDirStream(entries), 0
}

func (n *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !slices.Contains(n.fs.r.Names(), name) {
		return nil, syscall.ENOENT
	}
	return n.fs.newDir(ctx, n.EmbeddedInode(), name, "", out), 0
}

// dirNode is a provider's directory, or a directory below it (dir is the
// key prefix without a trailing "/"; "" for the provider's top).
type dirNode struct {
	gofs.Inode
	readOnly
	fs       *fsys
	provider string
	dir      string
}

func (n *dirNode) key(name string) string {
	if n.dir == "" {
		return name
	}
	return n.dir + "/" + name
}

func (n *dirNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.dirAttr(&out.Attr)
	out.SetTimeout(n.fs.cfg.DirTimeout)
	return 0
}

// Readdir lists the keys below the directory. A secret that is also a
// directory is listed twice: "name" (the directory) and "name@" (the secret).
func (n *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	names, err := n.fs.r.List(ctx, n.provider, n.dir)
	if errors.Is(err, errors.ErrUnsupported) {
		return gofs.NewListDirStream(nil), 0 // a provider that cannot list looks empty
	}
	if err != nil {
		return nil, toErrno(n.fs.log, "readdir "+n.provider+":"+n.dir, err)
	}
	dirs := make(map[string]bool)
	for _, name := range names {
		if d, ok := strings.CutSuffix(name, "/"); ok {
			dirs[d] = true
		}
	}
	seen := make(map[string]bool)
	entries := make([]fuse.DirEntry, 0, len(names))
	add := func(name string, mode uint32, kind byte) bool {
		if seen[name] {
			return false
		}
		seen[name] = true
		entries = append(entries, fuse.DirEntry{Name: name, Mode: mode, Ino: ino(kind, n.provider+"/"+n.key(name))})
		return true
	}
	var files []string
	for _, name := range names {
		d, isDir := strings.CutSuffix(name, "/")
		if !listable(d) {
			n.fs.log.Debug("not listing a name that a path cannot reach", "provider", n.provider, "dir", n.dir, "name", d)
			continue
		}
		switch {
		case isDir:
			add(d, syscall.S_IFDIR, 'd')
		case dirs[name]:
			if add(name+"@", syscall.S_IFREG, 'f') && len(files) < maxPrefetch {
				files = append(files, n.key(name))
			}
		default:
			if add(name, syscall.S_IFREG, 'f') && len(files) < maxPrefetch {
				files = append(files, n.key(name))
			}
		}
	}
	// `ls -l` or reading every file comes next, as a rule: read the
	// values in batches where the provider can, rather than one by one.
	if len(files) > 1 {
		if err := n.fs.r.Prefetch(ctx, n.provider, files); err != nil && !errors.Is(err, errors.ErrUnsupported) {
			n.fs.log.Debug("prefetch failed", "provider", n.provider, "dir", n.dir, "error", err)
		}
	}
	slices.SortFunc(entries, func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return gofs.NewListDirStream(entries), 0
}

// listable reports whether a listed name can be looked up again as itself.
func listable(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/#\x00")
}

// Lookup decides whether name is a directory or a secret (see the package
// documentation) and asks the backend as little as it can: the listing of
// this directory (cached) tells directories; anything else is read as a
// secret.
func (n *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx, cancel := context.WithTimeout(ctx, n.fs.cfg.Timeout)
	defer cancel()
	op := "lookup " + n.provider + ":" + n.key(name)
	rk, err := resolver.ParseKey(name)
	if err != nil {
		return nil, syscall.ENOENT
	}
	plain := rk.Version == "" && rk.Field == "" && !strings.HasSuffix(name, "@")

	// canList is false when the listing cannot tell what exists here.
	canList := true
	names, err := n.fs.r.List(ctx, n.provider, n.dir)
	switch {
	case err == nil:
		if slices.Contains(names, name+"/") {
			return n.fs.newDir(ctx, n.EmbeddedInode(), n.provider, n.key(name), out), 0
		}
	case errors.Is(err, errors.ErrUnsupported), errors.Is(err, resolver.ErrPermission):
		canList = false
	case errors.Is(err, context.Canceled):
		return nil, syscall.EINTR
	default:
		// The listing is unavailable; the secret may still be readable
		// (stale in the cache, or from a backend that recovered).
		n.fs.log.Debug("listing failed during lookup", "op", op, "error", err)
	}

	ref := resolver.Reference{Provider: n.provider, Key: n.key(rk.Key), Version: rk.Version, Field: rk.Field}
	s, err := n.fs.r.Get(ctx, ref)
	if err == nil {
		n.fs.fileAttr(s, &out.Attr)
		out.SetEntryTimeout(n.fs.cfg.DirTimeout)
		out.SetAttrTimeout(0)
		node := &fileNode{fs: n.fs, ref: ref}
		return n.NewInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino('f', n.provider+"/"+n.key(name))}), 0
	}
	// Where the token may not list this directory, a name it may not read
	// either can be a directory it may read below (a Vault policy on
	// "secret/data/team/app" only): take it as a directory.
	if plain && !canList && (errors.Is(err, resolver.ErrNotFound) || errors.Is(err, resolver.ErrPermission)) {
		return n.fs.newDir(ctx, n.EmbeddedInode(), n.provider, n.key(name), out), 0
	}
	if errors.Is(err, resolver.ErrNotFound) && plain {
		// Not in this directory's listing and not a secret: it may still be
		// a directory the listing leaves out (a Vault mount of another
		// engine) or that appeared since the listing was cached.
		if below, lerr := n.fs.r.List(ctx, n.provider, n.key(name)); lerr == nil && len(below) > 0 {
			return n.fs.newDir(ctx, n.EmbeddedInode(), n.provider, n.key(name), out), 0
		}
	}
	errno := toErrno(n.fs.log, op, err)
	n.fs.audit(ctx, "lookup", ref, errno) // a failed read never reaches open
	return nil, errno
}

// fileNode is one secret (with its version and field).
type fileNode struct {
	gofs.Inode
	readOnly
	fs  *fsys
	ref resolver.Reference
}

// handle holds the bytes a file was opened with.
type handle struct {
	secret resolver.Secret
}

func (n *fileNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(0)
	if h, ok := fh.(*handle); ok {
		n.fs.fileAttr(h.secret, &out.Attr)
		return 0
	}
	s, err := n.fs.r.Get(ctx, n.ref)
	if err != nil {
		return toErrno(n.fs.log, "getattr "+n.ref.String(), err)
	}
	n.fs.fileAttr(s, &out.Attr)
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0 {
		n.audit(ctx, "denied", syscall.EROFS)
		return nil, 0, syscall.EROFS
	}
	s, err := n.fs.r.Get(ctx, n.ref)
	errno := toErrno(n.fs.log, "open "+n.ref.String(), err)
	n.audit(ctx, "open", errno)
	if errno != 0 {
		return nil, 0, errno
	}
	return &handle{secret: s}, fuse.FOPEN_DIRECT_IO, 0
}

func (n *fileNode) audit(ctx context.Context, what string, errno syscall.Errno) {
	n.fs.audit(ctx, what, n.ref, errno)
}

// audit writes one record of an attempt to read ref: who, what, outcome.
func (f *fsys) audit(ctx context.Context, what string, ref resolver.Reference, errno syscall.Errno) {
	if f.cfg.Audit == nil {
		return
	}
	attrs := []any{"ref", ref.String()}
	if c, ok := fuse.FromContext(ctx); ok {
		attrs = append(attrs, "uid", c.Uid, "gid", c.Gid, "pid", c.Pid)
	}
	if errno == 0 {
		attrs = append(attrs, "result", "ok")
	} else {
		attrs = append(attrs, "result", errno.Error())
	}
	f.cfg.Audit.Info(what, attrs...)
}

// Flush says ENOSYS once: the kernel then stops sending FLUSH on close for
// this mount (there is nothing to flush), which saves a round trip per close.
func (n *fileNode) Flush(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

func (n *fileNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*handle)
	if !ok {
		return nil, syscall.EBADF
	}
	v := h.secret.Value
	if off >= int64(len(v)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(v)))
	return fuse.ReadResultData(v[off:end]), 0
}

// readOnly refuses every change with EROFS. The mount is also read-only
// in the kernel; this answers callers that reach the nodes directly.
type readOnly struct{}

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

func (readOnly) Rmdir(context.Context, string) syscall.Errno { return syscall.EROFS }

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

func (readOnly) Removexattr(context.Context, string) syscall.Errno { return syscall.EROFS }
