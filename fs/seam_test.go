package fs

// The seam between the filesystem and the engine, with the real engine
// (cache.Cache over a resolver.Resolver) behind the filesystem rather than
// a fake: exact names against versions, listings, names below a directory
// that cannot be listed, read-ahead.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// mapProvider serves values by key (and "key|version"), lists directories
// from its keys, and counts batches.
type mapProvider struct {
	mu       sync.Mutex
	values   map[string]string // guarded by mu
	noList   bool
	down     bool // guarded by mu
	batches  int  // guarded by mu
	canBatch bool
}

func (m *mapProvider) Name() string { return "p" }

func (m *mapProvider) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return resolver.Secret{}, fmt.Errorf("refused: %w", resolver.ErrUnavailable)
	}
	k := key
	if version != "" {
		k += "|" + version
	}
	v, ok := m.values[k]
	if !ok {
		return resolver.Secret{}, resolver.ErrNotFound
	}
	return resolver.Secret{Value: []byte(v)}, nil
}

func (m *mapProvider) List(ctx context.Context, dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, fmt.Errorf("refused: %w", resolver.ErrUnavailable)
	}
	if m.noList {
		return nil, resolver.ErrPermission
	}
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	var out []string
	for k := range m.values {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok || strings.Contains(rest, "|") {
			continue
		}
		if first, _, deeper := strings.Cut(rest, "/"); deeper {
			out = append(out, first+"/")
		} else {
			out = append(out, rest)
		}
	}
	return out, nil
}

// batching is a mapProvider that reads many keys in one call.
type batching struct{ *mapProvider }

func (b batching) GetBatch(ctx context.Context, keys []string) (map[string]resolver.Secret, error) {
	b.mu.Lock()
	b.batches++
	b.mu.Unlock()
	out := map[string]resolver.Secret{}
	for _, k := range keys {
		if s, err := b.Get(ctx, k, ""); err == nil {
			out[k] = s
		}
	}
	return out, nil
}

func realEngine(t *testing.T, p resolver.Provider) *cache.Cache {
	t.Helper()
	r, err := resolver.New(p)
	if err != nil {
		t.Fatal(err)
	}
	c := cache.New(r, cache.Options{TTL: time.Minute, MaxStale: time.Hour})
	t.Cleanup(c.Close)
	return c
}

func TestLookupDecisionsWithTheRealEngine(t *testing.T) {
	values := map[string]string{
		"app": "app", "app/db": "db", "top": "top!", "top|v1": "v1",
		"TRAIL@": "exact", "TRAIL": "plain", "ONLY@": "lone", "v@1": "exact version", "v|1": "the version",
	}
	tests := []struct {
		name   string
		noList bool
		path   []string
		want   fuse.Status
		isDir  bool
		size   uint64
	}{
		{"secret", false, []string{"p", "top"}, fuse.OK, false, 4},
		{"directory wins the plain name", false, []string{"p", "app"}, fuse.OK, true, 0},
		{"the secret behind a directory", false, []string{"p", "app@"}, fuse.OK, false, 3},
		{"below the directory", false, []string{"p", "app", "db"}, fuse.OK, false, 2},
		{"a version", false, []string{"p", "top@v1"}, fuse.OK, false, 2},
		{"missing", false, []string{"p", "nope"}, fuse.ENOENT, false, 0},
		{"the exact name wins over @", false, []string{"p", "TRAIL@"}, fuse.OK, false, 5},
		{"a lone name ending in @", false, []string{"p", "ONLY@"}, fuse.OK, false, 4},
		{"the listed exact name wins over @VERSION", false, []string{"p", "v@1"}, fuse.OK, false, 13},
		{"unlisted: the exact name still wins over @VERSION", true, []string{"p", "v@1"}, fuse.OK, false, 13},
		{"cannot list: a name that is no secret is a directory", true, []string{"p", "team"}, fuse.OK, true, 0},
		{"cannot list: a versioned name is never a directory", true, []string{"p", "team@1"}, fuse.ENOENT, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mp := &mapProvider{values: values, noList: tt.noList}
			out, st := lookupPath(t, realEngine(t, mp), tt.path...)
			if st != tt.want {
				t.Fatalf("lookup %v = %v, want %v", tt.path, st, tt.want)
			}
			if st != fuse.OK {
				return
			}
			if isDir := out.Attr.Mode&syscall.S_IFDIR != 0; isDir != tt.isDir {
				t.Errorf("lookup %v: directory = %v, want %v", tt.path, isDir, tt.isDir)
			}
			if !tt.isDir && out.Attr.Size != tt.size {
				t.Errorf("lookup %v: size %d, want %d", tt.path, out.Attr.Size, tt.size)
			}
		})
	}
}

// Readdir reads the listed values ahead in one batch, and a lookup after
// it asks the backend nothing.
func TestReaddirWithTheRealEngine(t *testing.T) {
	mp := &mapProvider{values: map[string]string{"d/a": "1", "d/b": "2", "d/c": "3"}}
	c := realEngine(t, batching{mp})
	raw := gofs.NewNodeFS(NewRoot(c, Config{}), &gofs.Options{})
	dir, st := lookupIn(raw, "p", "d")
	if st != fuse.OK {
		t.Fatal(st)
	}
	list := func() {
		in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: dir.NodeId}}
		var oo fuse.OpenOut
		if st := raw.OpenDir(make(chan struct{}), &fuse.OpenIn{InHeader: in.InHeader}, &oo); st != fuse.OK {
			t.Fatalf("opendir: %v", st)
		}
		in.Fh = oo.Fh
		buf := fuse.NewDirEntryList(make([]byte, 4096), 0)
		if st := raw.ReadDir(make(chan struct{}), in, buf); st != fuse.OK {
			t.Fatalf("readdir: %v", st)
		}
		raw.ReleaseDir(&fuse.ReleaseIn{InHeader: in.InHeader, Fh: oo.Fh})
	}
	list()
	mp.mu.Lock()
	batches := mp.batches
	mp.mu.Unlock()
	if batches != 1 {
		t.Errorf("batches after a readdir = %d, want 1 (the values read ahead)", batches)
	}
	before := c.Stats().Calls
	if _, st := lookupIn(raw, "p", "d", "b"); st != fuse.OK {
		t.Fatal(st)
	}
	if n := c.Stats().Calls - before; n != 0 {
		t.Errorf("a lookup after the read-ahead made %d backend calls, want 0", n)
	}
}
