package fs

import (
	"context"
	"slices"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

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
