#!/usr/bin/env bash
# Build the sandbox base rootfs without any image registry: Debian minbase plus
# Python 3 with its full standard library, trimmed, setuid bits removed, packed
# as a tarball for `docker import`. Needs root and a Debian mirror (or proxy).
#
#   infra/sandbox/build_rootfs.sh SUITE OUT.tar [MIRROR]
set -euo pipefail
suite=${1:?usage: build_rootfs.sh SUITE OUT.tar [MIRROR]}
out=${2:?usage: build_rootfs.sh SUITE OUT.tar [MIRROR]}
mirror=${3:-http://deb.debian.org/debian}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

# python3 (not python3-minimal): candidates need json, hashlib, decimal, ctypes...
debootstrap --variant=minbase --include=python3 "$suite" "$rootfs" "$mirror"

rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/var/log/* "$rootfs"/tmp/*
# Defence in depth (containers also run with no-new-privileges): no setuid/setgid binaries.
find "$rootfs" -xdev -type f -perm /6000 -exec chmod ug-s {} +

tar -C "$rootfs" --numeric-owner -cf "$out.part" .
mv "$out.part" "$out"
