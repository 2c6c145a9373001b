// Package fs shows secrets as a read-only FUSE filesystem. It is the only
// package that imports go-fuse.
//
// The tree is derived from references (see package resolver):
//
//	/                      one directory per enabled provider
//	/PROVIDER/             the provider's keys, when it can list them
//	/PROVIDER/a/b/KEY      the secret "a/b/KEY"
//	/PROVIDER/KEY@VERSION  a version or stage, resolved on lookup, never listed
//	/PROVIDER/KEY#FIELD    a field of a JSON value, resolved on lookup, never listed
//
// A name that is both a secret and a directory ("app" and "app/db") is
// shown as the directory "app"; the secret stays reachable, and is listed,
// as "app@" (an empty version: the current one). A provider that cannot
// list, or may not, still serves every path its user knows: a name that is
// not a secret there is taken as a directory.
//
// Every lookup, getattr and open asks the resolver, normally through the
// cache, under the resolver's deadline, so nothing waits on a backend
// without one. A file's content is fixed at open: the handle keeps the bytes
// it was opened with, reads are direct (no page cache), and attributes are
// not cached by the kernel, so after the cache TTL the next open reads the
// new value in full and stat shows its size.
//
// Errors cross into the kernel in one place, toErrno.
package fs
