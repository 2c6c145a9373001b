package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/secretfs/secretfs/audit"
	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// fakeEngine answers from maps; it stands in for the cache.
type fakeEngine struct {
	mu      sync.Mutex
	values  map[string]resolver.Secret // guarded by mu; by Reference.String()
	lists   map[string][]string        // by "provider:dir"
	listErr error
	getErr  error
	names   []string

	prefetched []string
	onChange   []func(cache.Change)
	pages      map[string][]string // by "provider:dir": partial pages a probe finds
	probed     []string            // guarded by mu
}

func (f *fakeEngine) Get(ctx context.Context, ref resolver.Reference) (cache.Value, error) {
	if f.getErr != nil {
		return cache.Value{}, f.getErr
	}
	f.mu.Lock()
	s, ok := f.values[ref.String()]
	f.mu.Unlock()
	if !ok {
		return cache.Value{}, fmt.Errorf("%s: %w", ref, resolver.ErrNotFound)
	}
	return cache.Value{Secret: s, FreshFor: time.Minute}, nil
}

func (f *fakeEngine) set(ref string, s resolver.Secret) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.values[ref] = s
}

func (f *fakeEngine) List(ctx context.Context, provider, dir string) (*cache.Listing, time.Duration, error) {
	if f.listErr != nil {
		return nil, 0, f.listErr
	}
	return cache.NewListing(f.lists[provider+":"+dir]), time.Minute, nil
}

// Probe serves probes where the test set pages; else the provider cannot.
func (f *fakeEngine) Probe(ctx context.Context, provider, dir string) (*cache.Listing, time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probed = append(f.probed, provider+":"+dir)
	page, ok := f.pages[provider+":"+dir]
	if !ok {
		return nil, 0, fmt.Errorf("probe: %w", errors.ErrUnsupported)
	}
	return cache.NewPartialListing(page), time.Minute, nil
}

func (f *fakeEngine) Names() []string { return f.names }

func (f *fakeEngine) Prefetch(ctx context.Context, provider string, keys []string) error {
	f.prefetched = append(f.prefetched, keys...)
	return nil
}

func (f *fakeEngine) OnChange(fn func(cache.Change)) { f.onChange = append(f.onChange, fn) }

func newTestFS(e Engine, cfg Config) *fsys {
	return NewRoot(e, cfg).(*rootNode).sys
}

func TestToErrno(t *testing.T) {
	tests := []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fmt.Errorf("x: %w", resolver.ErrNotFound), syscall.ENOENT},
		{resolver.ErrUnknownProvider, syscall.ENOENT},
		{resolver.ErrInvalidReference, syscall.ENOENT},
		{fmt.Errorf("x: %w", resolver.ErrPermission), syscall.EACCES},
		{fmt.Errorf("x: %w", resolver.ErrUnavailable), syscall.EIO},
		{context.DeadlineExceeded, syscall.EIO},
		{fmt.Errorf("wait: %w", context.Canceled), syscall.EINTR},
		{errors.ErrUnsupported, syscall.ENOTSUP},
		{errors.New("something else"), syscall.EIO},
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for _, tt := range tests {
		if got := toErrno(log, "op", tt.err); got != tt.want {
			t.Errorf("toErrno(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if !strings.Contains(logs.String(), "something else") || !strings.Contains(logs.String(), "backend unavailable") {
		t.Errorf("unknown and unavailable errors were not logged: %s", logs.String())
	}
}

// memAudit keeps records in memory; failing makes every write fail.
type memAudit struct {
	mu      sync.Mutex
	records []audit.Record
	failing bool
}

func (m *memAudit) Write(r audit.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing {
		return errors.New("disk full")
	}
	m.records = append(m.records, r)
	return nil
}

func TestFileNode(t *testing.T) {
	created := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	secret := resolver.Secret{Value: []byte("0123456789"), Created: created}
	trail := &memAudit{}
	tests := []struct {
		name      string
		audit     Auditor
		wantErrno syscall.Errno
		wantFlags uint32
	}{
		{"fast: opens stay in the kernel", nil, syscall.ENOSYS, 0},
		{"audit: every open reaches the daemon", trail, 0, fuse.FOPEN_KEEP_CACHE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFS(&fakeEngine{}, Config{UID: 1000, GID: 2000, FileMode: 0o440, Audit: tt.audit})
			n := &fileNode{sys: f, ref: resolver.Reference{Provider: "p", Key: "k"}, secret: secret, path: "p/k"}
			n.setValid(time.Minute)
			ctx := context.Background()
			var ao fuse.AttrOut
			if errno := n.Getattr(ctx, nil, &ao); errno != 0 {
				t.Fatalf("Getattr: %v", errno)
			}
			if got, want := ao.Attr.Mode, uint32(syscall.S_IFREG|0o440); got != want {
				t.Errorf("mode = %o, want %o", got, want)
			}
			if ao.Attr.Uid != 1000 || ao.Attr.Gid != 2000 || ao.Attr.Size != 10 {
				t.Errorf("owner %d:%d size %d, want 1000:2000 and 10", ao.Attr.Uid, ao.Attr.Gid, ao.Attr.Size)
			}
			if got := time.Unix(int64(ao.Attr.Mtime), 0).UTC(); !got.Equal(created) {
				t.Errorf("mtime = %v, want %v", got, created)
			}
			if ao.Timeout() <= 0 || ao.Timeout() > time.Minute {
				t.Errorf("attribute timeout %v, want within the node's validity", ao.Timeout())
			}
			_, flags, errno := n.Open(ctx, syscall.O_RDONLY)
			if errno != tt.wantErrno || flags != tt.wantFlags {
				t.Errorf("Open = flags %x, %v; want %x, %v", flags, errno, tt.wantFlags, tt.wantErrno)
			}
			if _, _, errno := n.Open(ctx, syscall.O_WRONLY); errno != syscall.EROFS {
				t.Errorf("Open for writing = %v, want EROFS", errno)
			}
			for _, rt := range []struct {
				off  int64
				size int
				want string
			}{{0, 4, "0123"}, {4, 100, "456789"}, {10, 4, ""}, {99, 4, ""}} {
				res, errno := n.Read(ctx, nil, make([]byte, rt.size), rt.off)
				if errno != 0 {
					t.Fatalf("Read: %v", errno)
				}
				got, _ := res.Bytes(make([]byte, rt.size))
				if string(got) != rt.want {
					t.Errorf("Read(off %d, %d) = %q, want %q", rt.off, rt.size, got, rt.want)
				}
			}
		})
	}
	if len(trail.records) != 2 || trail.records[0].Ref != "p:k" || trail.records[0].Path != "p/k" || trail.records[1].Result != syscall.EROFS.Error() {
		t.Errorf("audit records = %+v; want the open and the refused write", trail.records)
	}
	trail.failing = true
	n := &fileNode{sys: newTestFS(&fakeEngine{}, Config{Audit: trail}), ref: resolver.Reference{Provider: "p", Key: "k"}, secret: secret, path: "p/k"}
	if _, _, errno := n.Open(context.Background(), syscall.O_RDONLY); errno != syscall.EIO {
		t.Errorf("Open with an audit trail that cannot be written = %v, want EIO (fail closed)", errno)
	}
}

func TestReadOnly(t *testing.T) {
	var ro readOnly
	ctx := context.Background()
	var eo fuse.EntryOut
	errnos := map[string]syscall.Errno{
		"setattr":     ro.Setattr(ctx, nil, nil, nil),
		"mkdir":       func() syscall.Errno { _, e := ro.Mkdir(ctx, "d", 0o755, &eo); return e }(),
		"create":      func() syscall.Errno { _, _, _, e := ro.Create(ctx, "f", 0, 0o644, &eo); return e }(),
		"mknod":       func() syscall.Errno { _, e := ro.Mknod(ctx, "f", 0, 0, &eo); return e }(),
		"unlink":      ro.Unlink(ctx, "f"),
		"rmdir":       ro.Rmdir(ctx, "d"),
		"rename":      ro.Rename(ctx, "a", nil, "b", 0),
		"symlink":     func() syscall.Errno { _, e := ro.Symlink(ctx, "t", "l", &eo); return e }(),
		"link":        func() syscall.Errno { _, e := ro.Link(ctx, nil, "l", &eo); return e }(),
		"setxattr":    ro.Setxattr(ctx, "user.a", nil, 0),
		"removexattr": ro.Removexattr(ctx, "user.a"),
	}
	for op, errno := range errnos {
		if errno != syscall.EROFS {
			t.Errorf("%s = %v, want EROFS", op, errno)
		}
	}
}

func readdir(t *testing.T, ds gofs.DirStream) map[string]uint32 {
	t.Helper()
	out := make(map[string]uint32)
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			t.Fatal(errno)
		}
		out[e.Name] = e.Mode
	}
	return out
}

func TestReaddir(t *testing.T) {
	r := &fakeEngine{names: []string{"env", "test"}, lists: map[string][]string{
		"test:":    {"a", "app", "app/", "dir/", "bad#name", "a", "x@", "x", "x/"},
		"test:dir": {"x"},
	}}
	f := newTestFS(r, Config{})
	root := NewRoot(r, Config{}).(*rootNode)
	ds, _ := root.Readdir(context.Background())
	if got := readdir(t, ds); len(got) != 4 || got["env"] != syscall.S_IFDIR || got["test"] != syscall.S_IFDIR || got["."] != syscall.S_IFDIR || got[".."] != syscall.S_IFDIR {
		t.Errorf("root = %v, want ., .., env/ and test/", got)
	}

	d := &dirNode{sys: f, provider: "test"}
	ds, errno := d.Readdir(context.Background())
	if errno != 0 {
		t.Fatal(errno)
	}
	// "x@" is a secret's exact name: it wins over the "x@" of secret x.
	want := map[string]uint32{".": syscall.S_IFDIR, "..": syscall.S_IFDIR, "a": syscall.S_IFREG, "app": syscall.S_IFDIR, "app@": syscall.S_IFREG, "dir": syscall.S_IFDIR,
		"x": syscall.S_IFDIR, "x@": syscall.S_IFREG}
	got := readdir(t, ds)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("readdir = %v, want %v", got, want)
	}

	if want := []string{"a", "app", "x@"}; fmt.Sprint(r.prefetched) != fmt.Sprint(want) {
		t.Errorf("prefetched %q, want the listed secrets %q", r.prefetched, want)
	}

	r.listErr = resolver.ErrPermission
	if _, errno := d.Readdir(context.Background()); errno != syscall.EACCES {
		t.Errorf("readdir with listing denied = %v, want EACCES", errno)
	}
	r.listErr = errors.ErrUnsupported
	ds, errno = d.Readdir(context.Background())
	if errno != 0 || len(readdir(t, ds)) != 2 {
		t.Errorf("readdir of a provider that cannot list: %v; want an empty directory", errno)
	}
}

func TestDirAttr(t *testing.T) {
	f := newTestFS(&fakeEngine{}, Config{UID: 7, GID: 8, DirMode: 0o550})
	var ao fuse.AttrOut
	(&dirNode{sys: f}).Getattr(context.Background(), nil, &ao)
	if ao.Attr.Mode != syscall.S_IFDIR|0o550 || ao.Attr.Uid != 7 || ao.Attr.Gid != 8 {
		t.Errorf("dir attr mode %o owner %d:%d, want %o 7:8", ao.Attr.Mode, ao.Attr.Uid, ao.Attr.Gid, syscall.S_IFDIR|0o550)
	}
	def := newTestFS(&fakeEngine{}, Config{})
	if def.cfg.FileMode != 0o400 || def.cfg.DirMode != 0o500 {
		t.Errorf("default modes %o %o, want 0400 0500", def.cfg.FileMode, def.cfg.DirMode)
	}
}
