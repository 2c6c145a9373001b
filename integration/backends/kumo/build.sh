#!/usr/bin/env bash
# Build the kumo AWS emulator (github.com/sivchari/kumo, MIT) pinned by the
# tool directive in this directory's go.mod.
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

# go.mod/go.sum are complete; -mod=readonly guarantees the build never edits
# them (and fails loudly instead if they drift). GOWORK=off keeps any go.work
# in a parent directory from pulling this module into a workspace.
GOWORK=off go build -mod=readonly -o "$out" github.com/sivchari/kumo/cmd/kumo
