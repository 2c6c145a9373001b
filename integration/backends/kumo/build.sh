#!/usr/bin/env bash
# Build the kumo AWS emulator (github.com/sivchari/kumo, MIT) pinned by the
# tool directive in this directory's go.mod, with kumo.patch applied: the
# patch makes ListSecrets apply name filters as the service does (prefix,
# case-sensitive, "!" negation), adds BatchGetSecretValue (SecretIdList or
# Filters, per-secret errors), and answers ThrottlingException while the file
# named by KUMO_SECRETFS_THROTTLE_FILE exists. The patched copy lives in
# ./kumo-patched (git-ignored); go.mod's replace directive points at it.
#
# Usage: build.sh OUTPUT_PATH
#   OUTPUT_PATH is absolute or relative to the caller's cwd. Keep it outside
#   the repo tree or under a gitignored path (e.g. bin/kumo): the binary is
#   ~67 MB.
#
# Idempotent; repeat runs are fast thanks to the Go build cache. A cold build
# takes several minutes.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
	echo "usage: $0 OUTPUT_PATH" >&2
	exit 2
fi

out=$1
case "$out" in
/*) ;;
*) out="$PWD/$out" ;;
esac
mkdir -p "$(dirname "$out")"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
export GOWORK=off

version=v0.33.1
patched=$here/kumo-patched
stamp="$version $(sha256sum kumo.patch | cut -d' ' -f1)"
if [[ ! -f $patched/.secretfs-patched || $(cat "$patched/.secretfs-patched") != "$stamp" ]]; then
	echo "preparing patched kumo $version in $patched" >&2
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# Download outside this module: its replace target may not exist yet.
	src=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "github.com/sivchari/kumo@$version" |
		perl -ne 'if (/^\s*"Dir":\s*"(.*)",?\s*$/) { print $1; $found = 1 } END { exit($found ? 0 : 1) }')
	cp -R "$src" "$tmp/kumo"
	chmod -R u+w "$tmp/kumo"
	patch -s -d "$tmp/kumo" -p1 <kumo.patch
	echo "$stamp" >"$tmp/kumo/.secretfs-patched"
	rm -rf "$patched"
	mv "$tmp/kumo" "$patched"
fi

# go.mod/go.sum are complete; -mod=readonly guarantees the build never edits
# them (and fails loudly instead if they drift). GOWORK=off keeps any go.work
# in a parent directory from pulling this module into a workspace.
go build -mod=readonly -o "$out" github.com/sivchari/kumo/cmd/kumo
