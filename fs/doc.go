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
// A name that a listing shows reads the secret it was listed for: the
// exact name wins over every suffix form, so a secret named "x@" or "x@v1"
// is that secret, not a version of "x". Names containing "#" are not
// listed (no path could reach them again as themselves).
//
// The filesystem asks the engine (package cache) and never a backend
// directly; a lookup waits at most Timeout for the directory's listing and,
// apart from that, at most Timeout for the value.
//
// Reads stay in the kernel. Each version of a file's content is its own
// node (inode): a node's bytes never change, so the kernel may keep its
// pages, and a descriptor opened before a rotation reads the old bytes to
// the end while the next open finds the new node. The kernel keeps a
// file's entry and attributes for half of its value's remaining freshness,
// so a name in use is looked up (and counted as read, which keeps it
// refreshed ahead) before it expires. When the engine reports that a value
// changed, one notifier goroutine tells the kernel to forget the names that
// showed it; never from inside a FUSE request, which would deadlock.
//
// A mount runs in one of two modes, chosen when it mounts (the kernel
// decides NO_OPEN once per connection):
//
//   - fast: Open answers ENOSYS, so the kernel stops sending OPEN, and warm
//     reads never reach the daemon;
//   - audit (Config.Audit set, or an allow rule): every open reaches the
//     daemon and is recorded; the data still comes from the page cache.
//
// In audit mode an allow rule is checked (gate) before anything of a
// secret is fetched or shown: at lookup, at getattr and at open, and a
// listing leaves out what the caller may not read. The kernel keeps no name
// or attribute of a file under an allow rule, so every caller's stat comes
// here. A template's owner and mode are no looser than those of the
// secrets it reads (TemplateAttr), and its open is decided by their rules
// too (access.Rules.Decide).
//
// Errors cross into the kernel in one place, toErrno.
//
// The files, by concern: fs.go holds what every node shares (the
// configuration, the engine, attributes, a request's budgets, the audit
// record); root.go the root, dir.go a provider's directories (listing,
// and the lookup that decides directory or secret), file.go a secret's
// file (one node per version of its content, open and read); templates.go
// the templates directory; notify.go what the kernel is told of changes;
// interrupt.go how a request outlives a caught signal; mount.go mounting
// and unmounting.
package fs
