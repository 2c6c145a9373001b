package cache

import "slices"

// Listing is one directory's entries as a provider listed them (see
// resolver.Lister): "name" for a secret, "name/" for a directory. It is
// immutable and answers membership without a scan. A probe's listing may be
// partial: then a name it lacks may still exist.
type Listing struct {
	names   []string
	set     map[string]struct{}
	partial bool
}

// Complete reports whether the listing holds every entry of the directory.
func (l *Listing) Complete() bool { return !l.partial }

// NewListing returns the listing of names (duplicates are dropped).
func NewListing(names []string) *Listing {
	l := &Listing{names: slices.Clone(names), set: make(map[string]struct{}, len(names))}
	slices.Sort(l.names)
	l.names = slices.Compact(l.names)
	for _, n := range l.names {
		l.set[n] = struct{}{}
	}
	return l
}

// NewPartialListing returns a listing of names that may lack some of the
// directory's entries (a probe's page).
func NewPartialListing(names []string) *Listing {
	l := NewListing(names)
	l.partial = true
	return l
}

// Names returns the entries, sorted. The caller must not change them.
func (l *Listing) Names() []string { return l.names }

// Has reports whether entry ("name" or "name/") is listed.
func (l *Listing) Has(entry string) bool {
	_, ok := l.set[entry]
	return ok
}
