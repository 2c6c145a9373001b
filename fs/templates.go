package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/secretfs/secretfs/audit"
	"github.com/secretfs/secretfs/locked"
	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

// TemplatesDir is the name at the root under which templates appear. No
// provider may take it.
const TemplatesDir = "templates"

// templatesNode is MOUNT/templates: one file per template, rendered on
// lookup from values the engine serves.
type templatesNode struct {
	gofs.Inode
	readOnly
	sys *fsys
}

func (n *templatesNode) template(name string) *templates.Template {
	i := slices.IndexFunc(n.sys.cfg.Templates, func(t *templates.Template) bool { return t.Name == name })
	if i < 0 {
		return nil
	}
	return n.sys.cfg.Templates[i]
}

func (n *templatesNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.sys.dirGetattr(out)
}

func (n *templatesNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	n.sys.cfg.Count("readdir")
	entries := dots(n.EmbeddedInode(), len(n.sys.cfg.Templates))
	for _, t := range n.sys.cfg.Templates {
		entries = append(entries, fuse.DirEntry{Name: t.Name, Mode: syscall.S_IFREG, Ino: childIno(n.EmbeddedInode(), t.Name)})
	}
	return gofs.NewListDirStream(entries), 0
}

// Lookup renders the template. Every secret it reads comes through the
// engine (so from its cache, under its stale rules); a change of any of
// them makes the kernel forget the file, and the next lookup renders it
// again: a new inode when the bytes differ, so a held descriptor keeps the
// old render whole. A secret that cannot be read fails the lookup with EIO
// (or what the secret's error maps to), and the log names it, never a value.
func (n *templatesNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.sys.cfg.Count("lookup")
	if in := n.sys.notifier.retiredNode(ctx, n.EmbeddedInode(), name, out); in != nil {
		return in, 0
	}
	t := n.template(name)
	if t == nil {
		return nil, syscall.ENOENT
	}
	gen := n.sys.notifier.generation()
	// A caller the rules of the template or of a secret it reads deny
	// learns nothing from its render (not its size).
	path := TemplatesDir + "/" + name
	self := resolver.Reference{Provider: TemplatesDir, Key: name}
	inputs := append([]string{TemplatePath(t)}, TemplateInputs(t)...)
	if errno := n.sys.gate(ctx, path, self.String(), inputs); errno != 0 {
		return nil, errno
	}
	var (
		mu     sync.Mutex // the getter runs once per reference, at once
		holds  []any      // guarded by mu; what keeps the values read valid (locked memory) until the render is done
		fresh  = time.Duration(-1)
		served = map[resolver.Reference]string{} // what rules match: the secret each read returned
	)
	// A caught signal does not fail the render; the longest it waits is a
	// request's on the slowest provider it reads.
	longest := n.sys.cfg.Deadlines.RequestFor("")
	for _, r := range t.Refs() {
		longest = max(longest, n.sys.cfg.Deadlines.RequestFor(r.Provider))
	}
	rctx, done := request(ctx, longest)
	defer done()
	value, reads, err := t.Render(rctx, func(ctx context.Context, ref resolver.Reference) ([]byte, error) {
		v, err := n.sys.get(ctx, ref)
		if err == nil {
			mu.Lock()
			if fresh < 0 || v.FreshFor < fresh {
				fresh = v.FreshFor
			}
			served[ref] = servedPath(ref, v.Secret)
			holds = append(holds, v.Hold)
			mu.Unlock()
		}
		return v.Value, err
	})
	runtime.KeepAlive(holds)
	var hold any
	if err == nil && n.sys.cfg.Locker != nil {
		var old *fileNode
		if child := n.EmbeddedInode().GetChild(name); child != nil {
			old, _ = child.Operations().(*fileNode)
		}
		if old != nil && bytes.Equal(old.secret.Value, value) {
			// The same render as the file shows: its locked copy serves.
			clear(value)
			value, hold = old.secret.Value, old.secret.Hold
		} else {
			rendered := value
			if value, hold, err = n.sys.cfg.Locker.Copy(rendered); err != nil {
				err = fmt.Errorf("template %s: keeping the render in locked memory: %w", name, err)
			}
			clear(rendered)
		}
	}
	paths := make([]string, len(reads))
	for i, r := range reads {
		if p, ok := served[r]; ok {
			paths[i] = p
		} else {
			paths[i] = secretPath(r)
		}
	}
	refs := make([]string, len(reads))
	for i, r := range reads {
		refs[i] = r.String()
	}
	if errno := n.sys.gate(ctx, path, self.String(), append([]string{TemplatePath(t)}, paths...)); errno != 0 {
		return nil, errno
	}
	rec := audit.Record{Op: "render", Ref: self.String(), Path: path, Refs: refs, Result: "ok"}
	if err != nil {
		var errno syscall.Errno
		switch kind := resolver.KindOf(err); kind {
		case resolver.KindPermission:
			errno = syscall.EACCES
		case resolver.KindCanceled:
			errno = syscall.EINTR
		case resolver.KindUnknown:
			if errors.Is(err, locked.ErrFull) {
				n.sys.log.Warn("template not rendered", "template", name, "error", err)
				errno = syscall.EIO
				break
			}
			// A template function failed; its message may quote a value, so
			// only the template and what it read are logged.
			n.sys.log.Warn("template not rendered: a function failed", "template", name, "refs", strings.Join(refs, " "))
			errno = syscall.EIO
		default:
			// A secret it needs is missing or unavailable: the file would
			// not be whole. The error names the reference.
			n.sys.log.Warn("template not rendered", "template", name, "error", err)
			errno = syscall.EIO
		}
		rec.Result = errno.Error()
		if aerr := n.sys.record(ctx, rec); aerr != 0 {
			return nil, aerr
		}
		return nil, errno
	}
	if aerr := n.sys.record(ctx, rec); aerr != 0 {
		return nil, aerr
	}
	return n.sys.fileInode(ctx, n.EmbeddedInode(), name, content{
		ref: self, path: path, secret: resolver.Secret{Value: value, Hold: hold}, fresh: max(fresh, 0), reads: reads, served: paths, tmpl: t,
	}, gen, out), 0
}

// isTemplates reports whether name at the root is the templates directory.
func (f *fsys) isTemplates(name string) bool {
	return name == TemplatesDir && len(f.cfg.Templates) > 0
}
