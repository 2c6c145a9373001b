package fs

import (
	"log/slog"
	"testing"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

func TestNotifier(t *testing.T) {
	ref := resolver.Reference{Provider: "p", Key: "k"}
	other := resolver.Reference{Provider: "p", Key: "other"}

	t.Run("changes coalesce until told", func(t *testing.T) {
		n := newNotifier(slog.New(slog.DiscardHandler))
		n.watch(ref, nil, "k", "node", n.generation())
		if len(n.pending) != 0 {
			t.Fatalf("pending %v before any change", n.pending)
		}
		g := n.generation()
		for range 3 {
			n.changed(cache.Change{Ref: ref})
		}
		if got, want := n.generation(), g+3; got != want {
			t.Errorf("generation = %d, want %d (one per change)", got, want)
		}
		if len(n.pending) != 1 || len(n.wake) != 1 {
			t.Errorf("pending %v, %d wake-ups; want the one ref, one wake-up", n.pending, len(n.wake))
		}
	})
	t.Run("a lookup that raced a change is told again", func(t *testing.T) {
		n := newNotifier(slog.New(slog.DiscardHandler))
		g := n.generation() // the lookup begins
		n.changed(cache.Change{Ref: other})
		n.watch(ref, nil, "k", "node", g) // and is answered after the change
		if _, ok := n.pending[ref]; !ok {
			t.Errorf("pending %v: the raced name is not told again", n.pending)
		}
	})
	t.Run("a forgotten node is let go", func(t *testing.T) {
		n := newNotifier(slog.New(slog.DiscardHandler))
		n.watch(ref, nil, "k", "old", n.generation())
		n.watch(ref, nil, "k", "new", n.generation()) // the name shows a new node
		if got := len(n.watched[ref][shownAt{nil, "k"}]); got != 2 {
			t.Errorf("nodes under the name before the old one is forgotten: %d, want 2 (the kernel may hold both)", got)
		}
		n.unwatch(ref, nil, "k", "old") // the old node is forgotten
		if got := n.watched[ref][shownAt{nil, "k"}]; len(got) != 1 || !has(got, "new") {
			t.Errorf("after the old node was forgotten, the name shows %v, want the new node", got)
		}
		n.unwatch(ref, nil, "k", "new")
		if _, ok := n.watched[ref]; ok {
			t.Errorf("watched %v after every node was forgotten, want nothing kept", n.watched)
		}
	})
	t.Run("everything is told after a rules change", func(t *testing.T) {
		n := newNotifier(slog.New(slog.DiscardHandler))
		n.watch(ref, nil, "k", "a", n.generation())
		n.watch(other, nil, "other", "b", n.generation())
		n.everything()
		if len(n.pending) != 2 {
			t.Errorf("pending %v, want both names", n.pending)
		}
	})
}

func has(ns nodes, node any) bool { _, ok := ns[node]; return ok }
