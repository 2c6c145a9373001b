package fs

import (
	"fmt"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/secretfs/secretfs/resolver"
)

// lookupPath walks names from the root through go-fuse's bridge (no mount,
// no kernel) and returns the last entry, as the kernel would see it.
func lookupPath(t *testing.T, r Resolver, names ...string) (fuse.EntryOut, fuse.Status) {
	t.Helper()
	raw := gofs.NewNodeFS(NewRoot(r, Config{}), &gofs.Options{})
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
	listing := &fakeResolver{
		names: []string{"p"},
		values: map[string]resolver.Secret{
			"p:app": secret("app"), "p:app/db": secret("db"), "p:top": secret("top!"),
			"p:top@v1": secret("v1"),
		},
		lists: map[string][]string{"p:": {"app", "app/", "top"}, "p:app": {"db"}, "p:hidden": {"x"}},
	}
	tests := []struct {
		name  string
		r     *fakeResolver
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
		{"unlisted directory found by probing", listing, []string{"p", "hidden"}, fuse.OK, true, 0},
		{"missing field", listing, []string{"p", "top#f"}, fuse.ENOENT, false, 0},
		{"unknown provider", listing, []string{"q"}, fuse.ENOENT, false, 0},
		{"cannot list: a name that is no secret is a directory",
			&fakeResolver{names: []string{"p"}, listErr: fmt.Errorf("list: %w", resolver.ErrPermission)},
			[]string{"p", "team"}, fuse.OK, true, 0},
		{"cannot list: a versioned name is never a directory",
			&fakeResolver{names: []string{"p"}, listErr: fmt.Errorf("list: %w", resolver.ErrPermission)},
			[]string{"p", "team@1"}, fuse.ENOENT, false, 0},
		{"backend down", &fakeResolver{names: []string{"p"}, getErr: resolver.ErrUnavailable, lists: map[string][]string{}},
			[]string{"p", "x"}, fuse.EIO, false, 0},
		{"denied in a listable directory", &fakeResolver{names: []string{"p"}, getErr: resolver.ErrPermission, lists: map[string][]string{"p:": {"x"}}},
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
