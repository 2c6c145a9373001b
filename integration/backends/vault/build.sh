#!/usr/bin/env bash
# Builds a Vault dev-server binary from open-source Vault v1.14.2 (MPL-2.0).
#
# Usage: build.sh OUTPUT_PATH
#
# No published github.com/hashicorp/vault/sdk release matches Vault v1.14.2
# exactly. sdk v0.9.2 compiles against it, but its framework.Backend sanity
# check panics at the first request ("defines a CreateOperation but no
# ExistenceCheck"). So this script copies sdk v0.9.2 out of the module cache
# into ./sdk-patched (git-ignored), removes that one check, and go.mod points
# github.com/hashicorp/vault/sdk at it with a replace directive.
#
# LICENCE: do not bump Vault (>= 1.15, 1.14.6+, 1.13.13+ are BUSL, not MPL).
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
	echo "usage: $0 OUTPUT_PATH" >&2
	exit 2
fi

out=$1
if [[ $out != /* ]]; then
	out=$PWD/$out
fi

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
sdk_version=v0.9.2
sdk_dir=$here/sdk-patched
marker=$sdk_dir/.secretfs-sdk-patched
panic_msg='defines a CreateOperation but no ExistenceCheck'

# Never let an enclosing go.work pull this module into something else.
export GOWORK=off

tmp=
trap 'if [[ -n $tmp ]]; then rm -rf "$tmp"; fi' EXIT

prepare_sdk() {
	if [[ -f $marker && $(cat "$marker") == "$sdk_version" ]] &&
		[[ -f $sdk_dir/go.mod && -f $sdk_dir/framework/backend.go ]] &&
		! grep -qF "$panic_msg" "$sdk_dir/framework/backend.go"; then
		return 0 # already prepared and patched
	fi

	echo "preparing patched vault sdk $sdk_version in $sdk_dir" >&2

	# Download outside this module: its go.mod's replace target does not
	# exist yet, so no go command can run inside it before this step.
	local src
	tmp=$(mktemp -d)
	src=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/vault/sdk@$sdk_version" |
		perl -ne 'if (/^\s*"Dir":\s*"(.*)",?\s*$/) { print $1; $found = 1 } END { exit($found ? 0 : 1) }') || {
		echo "error: could not download github.com/hashicorp/vault/sdk@$sdk_version" >&2
		return 1
	}
	if [[ ! -f $src/framework/backend.go ]]; then
		echo "error: $src/framework/backend.go not found" >&2
		return 1
	fi

	rm -rf "$sdk_dir" "$tmp/sdk"
	cp -R "$src" "$tmp/sdk"
	chmod -R u+w "$tmp/sdk"

	# Remove the CreateOperation-without-ExistenceCheck panic from
	# (*Backend).init. Fails loudly unless exactly one block matched.
	perl -0777 -i -pe '
		$n = s{\n[ \t]*// Detect the coding error of attempting to define a CreateOperation without defining an ExistenceCheck\n[ \t]*if p\.ExistenceCheck == nil \{\n.*?\n\t\t\}\n}{\n\t\t// secretfs: CreateOperation-without-ExistenceCheck panic removed (see integration/backends/vault/build.sh).\n}s;
		die "vault sdk patch: expected 1 match, got $n\n" unless $n == 1;
	' "$tmp/sdk/framework/backend.go"
	if grep -qF "$panic_msg" "$tmp/sdk/framework/backend.go"; then
		echo "error: patch did not remove the ExistenceCheck panic" >&2
		return 1
	fi
	gofmt -e "$tmp/sdk/framework/backend.go" >/dev/null # must still parse

	echo "$sdk_version" >"$tmp/sdk/.secretfs-sdk-patched"
	mv "$tmp/sdk" "$sdk_dir"
}

prepare_sdk

mkdir -p "$(dirname -- "$out")"
cd "$here"
go build -trimpath -ldflags='-s -w' -o "$out" .
echo "built $out" >&2
