package fs

import (
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// notifier tells the kernel of changes, from one goroutine and never
// inside a FUSE request: invalidating an entry while a request on a related
// node is answered deadlocks in the kernel. The cache updates its state
// first and then reports a change; changes are coalesced until the
// goroutine takes them.
//
// A file whose value changed (or is gone) is deleted, as the kernel sees
// it (FUSE_NOTIFY_DELETE): the name is forgotten and the old inode loses
// its link, so that a watcher of the file (inotify) gets IN_DELETE_SELF and
// then IN_IGNORED, as when the CSI driver swaps its symlink; a watcher
// that adds its watch again finds the new file under the name. A change of
// owners and modes only makes the kernel forget the names.
//
// Every name the kernel holds keeps its values in use (fileNode.hold), so
// that a file a program read once and now only watches is kept fresh. What
// the kernel holds it may keep long after anyone used it: the sweep has
// the kernel forget every name not looked up since the last sweep, and
// the kernel lets go (FORGET) of those nobody holds. The names still held
// then (a watch, an open descriptor) are looked up again by the daemon
// itself (reattach), so that their next change can be told by name.
type notifier struct {
	log *slog.Logger
	// gen counts changes, so that a lookup can tell that one happened while
	// it was answered (and have its own name invalidated after it).
	gen  atomic.Uint64
	wake chan struct{} // capacity 1: a pending wake-up
	// visible, when set, is told of every changed value once the kernel
	// was told of it: the next open shows the new value (on-change).
	visible func([]resolver.Reference)
	// sweepEvery is how often names nobody looked up are let go (zero:
	// never); dir is the mountpoint, for the reattach.
	sweepEvery time.Duration
	dir        string

	mu      sync.Mutex
	watched map[resolver.Reference]map[shownAt]any // guarded by mu; by value (no Field): the names that show it, and the node shown
	pending map[resolver.Reference]bool            // guarded by mu; changed values not yet told: true when the value changed, false when only attributes did
}

// shownNode is what the notifier needs of a node it watches (a fileNode;
// tests give other values, which are only invalidated).
type shownNode interface {
	EmbeddedInode() *gofs.Inode
	// seenSince reports whether the kernel asked about the node (a lookup,
	// a getattr, an open) since t.
	seenSince(t time.Time) bool
	// forgotten reports whether the kernel let go of the node.
	forgotten() bool
	// mountPath is the node's path below the mount.
	mountPath() string
}

// shownAt is a name in a directory.
type shownAt struct {
	parent *gofs.Inode
	name   string
}

func newNotifier(log *slog.Logger) *notifier {
	return &notifier{
		log:     log,
		wake:    make(chan struct{}, 1),
		watched: make(map[resolver.Reference]map[shownAt]any),
		pending: make(map[resolver.Reference]bool),
	}
}

func (n *notifier) generation() uint64 { return n.gen.Load() }

// changed is the cache's OnChange callback. It never blocks.
func (n *notifier) changed(c cache.Change) {
	n.gen.Add(1)
	n.mu.Lock()
	n.pending[c.Ref] = true
	n.mu.Unlock()
	n.poke()
}

func (n *notifier) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// everything has the kernel forget every name it was told of (the rules
// that set owners and modes changed).
func (n *notifier) everything() {
	n.gen.Add(1)
	n.mu.Lock()
	for ref := range n.watched {
		if !n.pending[ref] {
			n.pending[ref] = false
		}
	}
	n.mu.Unlock()
	n.poke()
}

// watch records that name in parent shows base, through node, as the
// kernel is told by a lookup that began at generation gen. If anything
// changed since, the name is told again, after the lookup's answer.
func (n *notifier) watch(base resolver.Reference, parent *gofs.Inode, name string, node any, gen uint64) {
	n.mu.Lock()
	set := n.watched[base]
	if set == nil {
		set = make(map[shownAt]any)
		n.watched[base] = set
	}
	set[shownAt{parent, name}] = node
	raced := n.gen.Load() != gen
	if raced && !n.pending[base] {
		// What changed may not be this value: the name is forgotten, and
		// its file stays.
		n.pending[base] = false
	}
	n.mu.Unlock()
	if raced {
		n.poke()
	}
}

// unwatch forgets that name in parent shows base through node, unless
// another node shows it now.
func (n *notifier) unwatch(base resolver.Reference, parent *gofs.Inode, name string, node any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if set := n.watched[base]; set != nil && set[shownAt{parent, name}] == node {
		delete(set, shownAt{parent, name})
		if len(set) == 0 {
			delete(n.watched, base)
		}
	}
}

// run tells the kernel about changes until done is closed, and sweeps.
func (n *notifier) run(done <-chan struct{}) {
	var (
		sweep    <-chan time.Time
		reattach <-chan time.Time
		swept    []sweptName
		last     = time.Now()
	)
	if n.sweepEvery > 0 {
		t := time.NewTicker(n.sweepEvery)
		defer t.Stop()
		sweep = t.C
	}
	for {
		select {
		case <-done:
			return
		case <-n.wake:
			n.tell()
		case now := <-sweep:
			swept = n.sweep(last)
			last = now
			reattach = time.After(n.sweepEvery / 2) // the kernel's FORGETs have come by then
		case <-reattach:
			n.reattach(swept, done)
			swept, reattach = nil, nil
		}
	}
}

// tell tells the kernel of the changes pending, then visible.
func (n *notifier) tell() {
	type told struct {
		at      shownAt
		node    any
		replace bool
	}
	n.mu.Lock()
	var (
		names   []told
		changed []resolver.Reference
	)
	for ref, replace := range n.pending {
		for at, node := range n.watched[ref] {
			names = append(names, told{at, node, replace})
		}
		delete(n.watched, ref)
		if replace {
			changed = append(changed, ref)
		}
	}
	clear(n.pending)
	n.mu.Unlock()
	for _, t := range names {
		var errno syscall.Errno
		if sn, ok := t.node.(shownNode); ok && t.replace {
			// ENOENT: the name shows another node by now; the kernel has
			// forgotten the name all the same.
			errno = t.at.parent.NotifyDelete(t.at.name, sn.EmbeddedInode())
		} else {
			errno = t.at.parent.NotifyEntry(t.at.name)
		}
		// ENOENT: the kernel does not hold the name (any more).
		if errno != 0 && !errors.Is(errno, syscall.ENOENT) {
			n.log.Debug("invalidating a name failed", "name", t.at.name, "error", errno)
		}
	}
	if len(changed) > 0 && n.visible != nil {
		n.visible(changed)
	}
}

// sweptName is a name the sweep had the kernel forget.
type sweptName struct {
	shownAt
	node shownNode
}

// sweep has the kernel forget the names not looked up since since.
func (n *notifier) sweep(since time.Time) []sweptName {
	n.mu.Lock()
	var out []sweptName
	seen := map[shownAt]bool{}
	for _, set := range n.watched {
		for at, node := range set {
			sn, ok := node.(shownNode)
			if !ok || seen[at] || sn.seenSince(since) {
				continue
			}
			seen[at] = true
			out = append(out, sweptName{at, sn})
		}
	}
	n.mu.Unlock()
	for _, s := range out {
		s.parent.NotifyEntry(s.name)
	}
	return out
}

// reattach looks up again, from the daemon, the swept names whose node the
// kernel still holds, so that the kernel has the name again and a change
// can delete it (a watcher hears of it). In a goroutine of its own,
// bounded: a lookup never waits on the notifier, but it may wait on a
// backend for a template's render.
func (n *notifier) reattach(swept []sweptName, done <-chan struct{}) {
	var paths []string
	n.mu.Lock()
	for _, s := range swept {
		if s.node.forgotten() {
			continue
		}
		for _, set := range n.watched {
			if set[s.shownAt] == s.node {
				paths = append(paths, filepath.Join(n.dir, s.node.mountPath()))
				break
			}
		}
	}
	n.mu.Unlock()
	if len(swept) > 0 {
		n.log.Debug("names nobody looked up let go", "names", len(swept), "still held", len(paths))
	}
	if len(paths) == 0 || n.dir == "" {
		return
	}
	go func() {
		for _, p := range paths {
			select {
			case <-done:
				return
			default:
			}
			var st unix.Stat_t
			unix.Stat(p, &st) // the answer is the kernel's to keep
		}
	}()
}
