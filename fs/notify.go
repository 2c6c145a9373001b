package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

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
// The kernel deletes by name, and it may have let go of the name of an
// inode it still holds (a sweep, an expired entry): such a node is retired
// (see retire) by a lookup of the daemon's own that shows the old inode
// under its name once more, then deleted.
//
// A node the kernel holds though nobody looks it up (a program read the
// file once and now waits on inotify for its change, or holds it open)
// keeps its values in use (fileNode.hold), so that its change is heard.
// The kernel does not tell of watches; what it keeps, it may keep long
// after anyone used it. So the sweep, every sweepEvery, has the kernel
// forget every name not looked up since the last sweep; the kernel lets go
// (FORGET) at once of the nodes nobody holds, and the nodes it has not let
// go of shortly after are held. A name read once and let go costs what it
// did before; a held one costs a refresh per TTL until the kernel lets go
// of it.
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
	// never); dir is the mountpoint, for retire.
	sweepEvery time.Duration
	dir        string
	dev        uint64 // the mount's device: retire looks up only through it

	mu      sync.Mutex
	watched map[resolver.Reference]map[shownAt]nodes // guarded by mu; by value (no Field): the names that show it, and every node shown there that the kernel has not let go of
	pending map[resolver.Reference]bool              // guarded by mu; changed values not yet told: true when the value changed, false when only attributes did
	retired map[shownAt]retiring                     // guarded by mu; the node the daemon's own lookup of a name gets while it is retired
}

// retiring is a node retire shows under its name to one thread of the
// daemon (the FUSE request's pid is the calling thread's).
type retiring struct {
	node shownNode
	tid  uint32
}

// nodes are the nodes shown under a name: the one shown last, and older
// ones the kernel may still hold (a watch, a descriptor), which must hear
// of a change too.
type nodes map[any]struct{}

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
	// hold keeps the node's values in use until the kernel lets go of it.
	hold()
	// deleted marks the node as deleted: a lookup never shows it again.
	deleted()
	// entryOut fills out for a lookup that shows the node (retire).
	entryOut(out *fuse.EntryOut)
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
		watched: make(map[resolver.Reference]map[shownAt]nodes),
		pending: make(map[resolver.Reference]bool),
		retired: make(map[shownAt]retiring),
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
		set = make(map[shownAt]nodes)
		n.watched[base] = set
	}
	at := shownAt{parent, name}
	if set[at] == nil {
		set[at] = nodes{}
	}
	set[at][node] = struct{}{}
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

// unwatch forgets that name in parent showed base through node (the
// kernel let go of node).
func (n *notifier) unwatch(base resolver.Reference, parent *gofs.Inode, name string, node any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	set := n.watched[base]
	at := shownAt{parent, name}
	if set == nil || set[at] == nil {
		return
	}
	delete(set[at], node)
	if len(set[at]) == 0 {
		delete(set, at)
	}
	if len(set) == 0 {
		delete(n.watched, base)
	}
}

// run tells the kernel about changes until done is closed, and sweeps.
func (n *notifier) run(done <-chan struct{}) {
	var (
		sweep   <-chan time.Time
		confirm <-chan time.Time
		swept   []shownNode
		last    = time.Now()
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
			n.tell(done)
		case now := <-sweep:
			if confirm == nil {
				swept = n.sweep(last)
				confirm = time.After(forgetWait)
			}
			last = now
		case <-confirm:
			for _, node := range swept {
				if !node.forgotten() {
					node.hold() // held by something else than a name
				}
			}
			swept, confirm = nil, nil
		}
	}
}

// tell tells the kernel of the changes pending, then visible.
func (n *notifier) tell(done <-chan struct{}) {
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
		for at, ns := range n.watched[ref] {
			if !replace {
				names = append(names, told{at, nil, false}) // the name only
				continue
			}
			for node := range ns {
				names = append(names, told{at, node, true})
			}
		}
		delete(n.watched, ref)
		if replace {
			changed = append(changed, ref)
		}
	}
	clear(n.pending)
	n.mu.Unlock()
	var retire []nodeAt
	for _, t := range names {
		var errno syscall.Errno
		sn, ok := t.node.(shownNode)
		if ok && t.replace {
			sn.deleted() // never shown again: its inode loses its link
			errno = t.at.parent.NotifyDelete(t.at.name, sn.EmbeddedInode())
			if errno == syscall.ENOENT && !sn.forgotten() {
				// The kernel holds the node but not by this name (any
				// more): its watchers hear of the change once it is shown
				// there again.
				retire = append(retire, nodeAt{t.at, sn})
				continue
			}
		} else {
			errno = t.at.parent.NotifyEntry(t.at.name)
		}
		// ENOENT: the kernel does not hold the name (any more).
		if errno != 0 && !errors.Is(errno, syscall.ENOENT) {
			n.log.Debug("invalidating a name failed", "name", t.at.name, "error", errno)
		}
	}
	if len(retire) > 0 {
		// Not from this goroutine: a lookup may wait on a backend (a
		// template's render), bounded by a request's deadline.
		go n.retire(retire, done)
	}
	if len(changed) > 0 && n.visible != nil {
		n.visible(changed)
	}
}

// nodeAt is a node and a name it was shown under.
type nodeAt struct {
	shownAt
	node shownNode
}

// forgetWait is how long after a sweep the kernel has sent the FORGETs of
// the nodes nobody holds: it sends them as it drops the names.
const forgetWait = 100 * time.Millisecond

// sweep has the kernel forget the names not looked up since since, and
// returns their nodes: those it does not let go of are held by something
// else.
func (n *notifier) sweep(since time.Time) []shownNode {
	n.mu.Lock()
	var (
		names []shownAt
		nodes []shownNode // unseen: held by something else if not let go of
	)
	done := map[shownAt]bool{}
	for _, set := range n.watched {
		for at, ns := range set {
			if done[at] {
				continue
			}
			done[at] = true
			used := false
			for node := range ns {
				sn, ok := node.(shownNode)
				if !ok || sn.seenSince(since) {
					used = true
					continue
				}
				nodes = append(nodes, sn)
			}
			if !used {
				names = append(names, at)
			}
		}
	}
	n.mu.Unlock()
	for _, at := range names {
		at.parent.NotifyEntry(at.name)
	}
	if len(names) > 0 {
		n.log.Debug("names nobody looked up let go", "names", len(names))
	}
	return nodes
}

// maxRetireTries bounds how often retire shows a node again when a lookup
// of someone else's takes the name in between.
const maxRetireTries = 10

// retire deletes, as the kernel sees it, nodes the kernel holds without a
// name: the name is forgotten, looked up by the daemon itself (which is
// shown the old node, see retiredNode), and the old node deleted under
// it. Nobody else is ever shown the old node.
func (n *notifier) retire(nodes []nodeAt, done <-chan struct{}) {
	root, err := n.root()
	if err != nil {
		n.log.Warn("a changed file's watchers cannot be told", "error", err)
		return
	}
	defer unix.Close(root)
	// The lookup is this thread's, and known by its id.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := uint32(unix.Gettid())
	for _, r := range nodes {
		for range maxRetireTries {
			select {
			case <-done:
				return
			default:
			}
			if r.node.forgotten() {
				break
			}
			r.parent.NotifyEntry(r.name)
			n.mu.Lock()
			n.retired[r.shownAt] = retiring{r.node, tid}
			n.mu.Unlock()
			// Below the mount's root every name is this daemon's: no one
			// can redirect it elsewhere.
			var st unix.Stat_t
			unix.Fstatat(root, r.node.mountPath(), &st, unix.AT_SYMLINK_NOFOLLOW)
			n.mu.Lock()
			delete(n.retired, r.shownAt)
			n.mu.Unlock()
			if r.parent.NotifyDelete(r.name, r.node.EmbeddedInode()) != syscall.ENOENT {
				break
			}
		}
	}
}

// rootWait bounds how long retire waits to open the mount's root.
const rootWait = 5 * time.Second

// root opens the mount's root (O_PATH), and checks it is this mount's: the
// mountpoint's path could have been moved and another put in its place.
func (n *notifier) root() (int, error) {
	if n.dir == "" {
		return -1, errors.New("no mountpoint")
	}
	type opened struct {
		fd  int
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		fd, err := unix.Open(n.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		ch <- opened{fd, err}
	}()
	var o opened
	select {
	case o = <-ch:
	case <-time.After(rootWait):
		go func() {
			if o := <-ch; o.err == nil {
				unix.Close(o.fd)
			}
		}()
		return -1, fmt.Errorf("opening %s took more than %v", n.dir, rootWait)
	}
	if o.err != nil {
		return -1, o.err
	}
	var st unix.Stat_t
	if err := unix.Fstat(o.fd, &st); err != nil || st.Dev != n.dev || st.Ino != 1 {
		unix.Close(o.fd)
		return -1, fmt.Errorf("%s is no longer this mount's root", n.dir)
	}
	return o.fd, nil
}

// retiredNode is the node a lookup of name in parent shows, when the
// daemon itself looks it up to retire it (see retire).
func (n *notifier) retiredNode(ctx context.Context, parent *gofs.Inode, name string, out *fuse.EntryOut) *gofs.Inode {
	n.mu.Lock()
	r, ok := n.retired[shownAt{parent, name}]
	n.mu.Unlock()
	if !ok {
		return nil
	}
	if c, ok := fuse.FromContext(ctx); !ok || c.Pid != r.tid {
		return nil
	}
	r.node.entryOut(out)
	out.SetEntryTimeout(0)
	out.SetAttrTimeout(0)
	return r.node.EmbeddedInode()
}
