// Package resolver turns a secret reference into bytes.
//
// A reference names a provider (a backend such as the process environment,
// AWS Secrets Manager or Vault), a key inside it, optionally a version and
// optionally a field:
//
//	PROVIDER:KEY[@VERSION][#FIELD]        on the command line
//	/MOUNT/PROVIDER/KEY[@VERSION][#FIELD] as a path below a secretfs mount
//
// KEY may contain "/" (it is shown as nested directories). VERSION selects a
// version or stage in whatever vocabulary the provider speaks (an AWS stage
// such as AWSPREVIOUS or a version id, a Vault KV v2 version number). FIELD
// selects a top-level key of a JSON object value: a string field is returned
// raw, any other JSON value as compact JSON.
//
// Because "@" is legal inside real secret names, the Resolver first asks for
// the exact name "KEY@VERSION" and only when that does not exist reads KEY at
// VERSION: the exact name wins. A trailing "@" with no version ("app@") names
// the current version of KEY; the filesystem uses it to keep a secret
// reachable when a directory of the same name hides it.
//
// Providers are small: a Provider has a name and a context-first Get. Optional
// abilities, such as listing keys, are separate interfaces (Lister) found by
// type assertion, the way go-fuse finds what a node can do. Every provider
// maps its native errors onto the sentinel errors of this package (ErrNotFound,
// ErrPermission, ErrUnavailable, ...), wrapped with %w, so that callers (the
// cache, the filesystem, the CLI) decide with errors.Is and never need to know
// which backend answered.
package resolver
