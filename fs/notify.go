package fs

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// notifier tells the kernel to forget the names whose value changed, from
// one goroutine and never inside a FUSE request: invalidating an entry while
// a request on a related node is answered deadlocks in the kernel. The
// cache updates its state first and then reports a change; changes are
// coalesced until the goroutine takes them.
type notifier struct {
	log *slog.Logger
	// gen counts changes, so that a lookup can tell that one happened while
	// it was answered (and have its own name invalidated after it).
	gen  atomic.Uint64
	wake chan struct{} // capacity 1: a pending wake-up

	mu      sync.Mutex
	watched map[resolver.Reference]map[shownAt]any // guarded by mu; by value (no Field): the names that show it, and the node shown
	pending map[resolver.Reference]struct{}        // guarded by mu; changed values not yet told
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
		pending: make(map[resolver.Reference]struct{}),
	}
}

func (n *notifier) generation() uint64 { return n.gen.Load() }

// changed is the cache's OnChange callback. It never blocks.
func (n *notifier) changed(c cache.Change) {
	n.gen.Add(1)
	n.mu.Lock()
	n.pending[c.Ref] = struct{}{}
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
		n.pending[ref] = struct{}{}
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
	if raced {
		n.pending[base] = struct{}{}
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

// run tells the kernel about changes until done is closed.
func (n *notifier) run(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-n.wake:
		}
		n.mu.Lock()
		var names []shownAt
		for ref := range n.pending {
			for at := range n.watched[ref] {
				names = append(names, at)
			}
			delete(n.watched, ref)
		}
		clear(n.pending)
		n.mu.Unlock()
		for _, at := range names {
			// ENOENT: the kernel does not hold the name (any more).
			if errno := at.parent.NotifyEntry(at.name); errno != 0 && !errors.Is(errno, syscall.ENOENT) {
				n.log.Debug("invalidating a name failed", "name", at.name, "error", errno)
			}
		}
	}
}
