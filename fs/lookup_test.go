package fs

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/secretfs/secretfs/resolver"
)

// lookupPath walks names from the root through go-fuse's bridge (no mount,
// no kernel) and returns the last entry, as the kernel would see it.
func lookupPath(t *testing.T, e Engine, names ...string) (fuse.EntryOut, fuse.Status) {
	t.Helper()
	return lookupIn(gofs.NewNodeFS(NewRoot(e, Config{}), &gofs.Options{}), names...)
}

// lookupIn walks names from the root of raw.
func lookupIn(raw fuse.RawFileSystem, names ...string) (fuse.EntryOut, fuse.Status) {
	var out fuse.EntryOut
	parent := uint64(1)
	for _, name := range names {
		out = fuse.EntryOut{}
		if st := raw.Lookup(make(chan struct{}), &fuse.InHeader{NodeId: parent}, name, &out); st != fuse.OK {
			return out, st
		}
		parent = out.NodeId
	}
	return out, fuse.OK
}

func TestLookupDecisions(t *testing.T) {
	secret := func(v string) resolver.Secret { return resolver.Secret{Value: []byte(v)} }
	listing := &fakeEngine{
		names: []string{"p"},
		values: map[string]resolver.Secret{
			"p:app": secret("app"), "p:app/db": secret("db"), "p:top": secret("top!"),
			"p:top@v1": secret("v1"), "p:TRAIL@@": secret("exact"), "p:TRAIL": secret("plain"),
			"p:ONLY@@": secret("lone"), "p:v@1@": secret("exact version"), // exact names, as Reference.String has them
		},
		lists: map[string][]string{"p:": {"app", "app/", "top", "TRAIL@", "TRAIL", "ONLY@", "v@1"}, "p:app": {"db"}, "p:hidden": {"x"}},
	}
	tests := []struct {
		name  string
		r     *fakeEngine
		path  []string
		want  fuse.Status
		isDir bool
		size  uint64
	}{
		{"secret", listing, []string{"p", "top"}, fuse.OK, false, 4},
		{"directory wins the plain name", listing, []string{"p", "app"}, fuse.OK, true, 0},
		{"the secret behind a directory", listing, []string{"p", "app@"}, fuse.OK, false, 3},
		{"below the directory", listing, []string{"p", "app", "db"}, fuse.OK, false, 2},
		{"a version, resolved on lookup", listing, []string{"p", "top@v1"}, fuse.OK, false, 2},
		{"missing", listing, []string{"p", "nope"}, fuse.ENOENT, false, 0},
		{"the exact name wins over @", listing, []string{"p", "TRAIL@"}, fuse.OK, false, 5},
		{"a lone name ending in @", listing, []string{"p", "ONLY@"}, fuse.OK, false, 4},
		{"the exact name wins over @VERSION", listing, []string{"p", "v@1"}, fuse.OK, false, 13},
		{"unlisted directory found by probing", listing, []string{"p", "hidden"}, fuse.OK, true, 0},
		{"missing field", listing, []string{"p", "top#f"}, fuse.ENOENT, false, 0},
		{"unknown provider", listing, []string{"q"}, fuse.ENOENT, false, 0},
		{"cannot list: a name that is no secret is a directory",
			&fakeEngine{names: []string{"p"}, listErr: fmt.Errorf("list: %w", resolver.ErrPermission)},
			[]string{"p", "team"}, fuse.OK, true, 0},
		{"cannot list: a versioned name is never a directory",
			&fakeEngine{names: []string{"p"}, listErr: fmt.Errorf("list: %w", resolver.ErrPermission)},
			[]string{"p", "team@1"}, fuse.ENOENT, false, 0},
		{"backend down", &fakeEngine{names: []string{"p"}, getErr: resolver.ErrUnavailable, lists: map[string][]string{}},
			[]string{"p", "x"}, fuse.EIO, false, 0},
		{"denied in a listable directory", &fakeEngine{names: []string{"p"}, getErr: resolver.ErrPermission, lists: map[string][]string{"p:": {"x"}}},
			[]string{"p", "x"}, fuse.EACCES, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, st := lookupPath(t, tt.r, tt.path...)
			if st != tt.want {
				t.Fatalf("lookup %v = %v, want %v", tt.path, st, tt.want)
			}
			if st != fuse.OK {
				return
			}
			if isDir := out.Attr.Mode&syscall.S_IFDIR != 0; isDir != tt.isDir {
				t.Errorf("lookup %v: directory = %v, want %v (mode %o)", tt.path, isDir, tt.isDir, out.Attr.Mode)
			}
			if !tt.isDir && out.Attr.Size != tt.size {
				t.Errorf("lookup %v: size %d, want %d", tt.path, out.Attr.Size, tt.size)
			}
		})
	}
}

// A value that changes gets a new inode; the same value keeps its inode.
func TestLookupNewInodePerValue(t *testing.T) {
	e := &fakeEngine{names: []string{"p"}, values: map[string]resolver.Secret{"p:k": {Value: []byte("one")}},
		lists: map[string][]string{"p:": {"k"}}}
	raw := gofs.NewNodeFS(NewRoot(e, Config{}), &gofs.Options{})
	first, st := lookupIn(raw, "p", "k")
	if st != fuse.OK {
		t.Fatal(st)
	}
	again, _ := lookupIn(raw, "p", "k")
	if again.NodeId != first.NodeId || again.Attr.Ino != first.Attr.Ino {
		t.Errorf("the same value looked up again: node %d ino %d, want %d %d", again.NodeId, again.Attr.Ino, first.NodeId, first.Attr.Ino)
	}
	e.set("p:k", resolver.Secret{Value: []byte("two")})
	next, _ := lookupIn(raw, "p", "k")
	if next.NodeId == first.NodeId || next.Attr.Ino == first.Attr.Ino || next.Attr.Size != 3 {
		t.Errorf("a new value: node %d ino %d, want a new node and inode (old %d %d)", next.NodeId, next.Attr.Ino, first.NodeId, first.Attr.Ino)
	}
	if d := time.Duration(next.EntryValid)*time.Second + time.Duration(next.EntryValidNsec); d != 30*time.Second {
		t.Errorf("entry timeout %v, want half of the value's freshness (30s)", d)
	}
}

// FuzzListedNameReadsItself checks that every name a directory shows looks
// up to the entry it was listed for: a directory to the directory, a secret
// to exactly that secret.
func FuzzListedNameReadsItself(f *testing.F) {
	for _, s := range []string{"a b/ a", "x@ x x/", "v@1 v", "TRAIL@ TRAIL", "c#d c", "@ @@ a@b@", "d/ d@ d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		names := strings.Fields(in)
		e := &fakeEngine{names: []string{"p"}, values: map[string]resolver.Secret{}, lists: map[string][]string{"p:": names}}
		for _, n := range names {
			if !strings.HasSuffix(n, "/") {
				e.values["p:"+resolver.Reference{Key: n}.KeyString()] = resolver.Secret{Value: []byte("value of " + n)}
			}
		}
		l, _, _ := e.List(context.Background(), "p", "")
		for _, s := range showNames(l) {
			raw := gofs.NewNodeFS(NewRoot(e, Config{}), &gofs.Options{})
			out, st := lookupIn(raw, "p", s.name)
			if st != fuse.OK {
				t.Fatalf("%q (listed for %q): lookup %v", s.name, s.entry, st)
			}
			isDir := out.Attr.Mode&syscall.S_IFDIR != 0
			if want := strings.HasSuffix(s.entry, "/"); isDir != want {
				t.Fatalf("%q (listed for %q): directory %v, want %v", s.name, s.entry, isDir, want)
			}
			if !isDir && out.Attr.Size != uint64(len("value of "+s.entry)) {
				t.Fatalf("%q (listed for %q): size %d, want that of %q", s.name, s.entry, out.Attr.Size, "value of "+s.entry)
			}
		}
	})
}

// A provider that probes (AWS) is never listed on the read path: a name is
// decided by the directory's page when that is complete, else by a probe
// below the name, then by reading it.
func TestLookupByProbe(t *testing.T) {
	secret := func(v string) resolver.Secret { return resolver.Secret{Value: []byte(v)} }
	newEngine := func() *fakeEngine {
		return &fakeEngine{
			names: []string{"p"},
			values: map[string]resolver.Secret{"p:big/s1": secret("one"), "p:app": secret("app"), "p:small/x": secret("x"),
				"p:mixed/a": secret("a"), "p:at/T@@": secret("exact"), "p:at/T": secret("plain")},
			// "" and "big" are larger than a page; "small" fits in one.
			pages: map[string][]string{"p:": {"aaa"}, "p:big": {"s0"}, "p:big/s1": {}, "p:app": {"db"}, "p:small": {"x", "y/"}, "p:big/nope": {},
				"p:mixed": {"a"}, "p:mixed/a": {"b"}, "p:at": {"T"}, "p:at/T@": {}},
			lists: map[string][]string{}, // a listing would be a bug: never asked for
		}
	}
	tests := []struct {
		path       []string
		want       fuse.Status
		isDir      bool
		wantProbed []string
		size       uint64
	}{
		{[]string{"big", "s1"}, fuse.OK, false, []string{"p:", "p:big", "p:big", "p:big/s1"}, 3},
		{[]string{"app"}, fuse.OK, true, []string{"p:", "p:app"}, 0},
		{[]string{"small", "x"}, fuse.OK, false, []string{"p:", "p:small", "p:small", "p:small/x"}, 1},
		{[]string{"small", "y"}, fuse.OK, true, []string{"p:", "p:small", "p:small"}, 0},
		{[]string{"big", "nope"}, fuse.ENOENT, false, []string{"p:", "p:big", "p:big", "p:big/nope", "p:big/nope"}, 0},
		// A page that shows "a" as a secret does not hide the directory a/.
		{[]string{"mixed", "a"}, fuse.OK, true, []string{"p:", "p:mixed", "p:mixed", "p:mixed/a"}, 0},
		// A secret named exactly "T@" wins over the current version of T.
		{[]string{"at", "T@"}, fuse.OK, false, []string{"p:", "p:at", "p:at", "p:at/T@"}, 5},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.path, "/"), func(t *testing.T) {
			e := newEngine()
			out, st := lookupPath(t, e, append([]string{"p"}, tt.path...)...)
			if st != tt.want {
				t.Fatalf("lookup = %v, want %v", st, tt.want)
			}
			if st == fuse.OK && (out.Attr.Mode&syscall.S_IFDIR != 0) != tt.isDir {
				t.Errorf("directory = %v, want %v", !tt.isDir, tt.isDir)
			}
			if st == fuse.OK && !tt.isDir && out.Attr.Size != tt.size {
				t.Errorf("size %d, want %d", out.Attr.Size, tt.size)
			}
			if fmt.Sprint(e.probed) != fmt.Sprint(tt.wantProbed) {
				t.Errorf("probed %q, want %q", e.probed, tt.wantProbed)
			}
		})
	}
}
