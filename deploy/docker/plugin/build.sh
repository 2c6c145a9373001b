#!/bin/sh
# Assembles the managed Docker plugin: DIR/config.json and DIR/rootfs, from
# a static secretfs binary (make release, or CGO_ENABLED=0 go build).
#
#   deploy/docker/plugin/build.sh BINARY DIR
#   docker plugin create secretfs DIR && docker plugin enable secretfs
set -eu
[ $# -eq 2 ] || { echo "usage: $0 BINARY DIR" >&2; exit 2; }
bin=$1 dir=$2
here=$(dirname "$0")
rm -rf "$dir"
mkdir -p "$dir/rootfs/mnt/volumes" "$dir/rootfs/var/lib/secretfs" "$dir/rootfs/run/docker/plugins" \
	"$dir/rootfs/tmp" "$dir/rootfs/etc/ssl/certs" "$dir/rootfs/proc" "$dir/rootfs/dev" "$dir/rootfs/sys"
chmod 1777 "$dir/rootfs/tmp"
cp "$bin" "$dir/rootfs/secretfs"
chmod 0755 "$dir/rootfs/secretfs"
# Backends over TLS need the CA certificates.
for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
	if [ -f "$ca" ]; then cp "$ca" "$dir/rootfs/etc/ssl/certs/ca-certificates.crt"; break; fi
done
cp "$here/config.json" "$dir/config.json"
