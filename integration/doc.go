// Package integration holds secretfs's end-to-end tests: they build the
// secretfs binary (with the test-only provider compiled in), mount it for
// real through the kernel, start real backends (the kumo AWS emulator and a
// Vault dev server) as separate processes on loopback, and read through the
// mount as an application would.
//
// Run them with `make test`, which builds the backends first and tells the
// tests where they are (SECRETFS_KUMO_BIN, SECRETFS_VAULT_BIN). The suite
// fails if any FUSE mount it made is left behind.
package integration
