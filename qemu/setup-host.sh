#!/usr/bin/env bash
# Host set-up for the QEMU target: extra Debian suites (pinned low so nothing
# else is upgraded), the arm64 foreign architecture, the cross tools and QEMU.
# Idempotent; needs root (CI and the project's machines run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "setup-host.sh: needs root (apt-get); run it with sudo" >&2; exit 1; }

SRC=/etc/apt/sources.list.d/hakeys-debian.sources
PIN=/etc/apt/preferences.d/hakeys-debian
MIRROR=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
want_src="Types: deb deb-src
URIs: $MIRROR
Suites: trixie sid bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
want_pin="Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=sid
Pin-Priority: 50

Package: *
Pin: release n=bookworm-backports
Pin-Priority: 100"
changed=0
if [ "$(cat "$SRC" 2>/dev/null)" != "$want_src" ]; then echo "$want_src" > "$SRC"; changed=1; fi
if [ "$(cat "$PIN" 2>/dev/null)" != "$want_pin" ]; then echo "$want_pin" > "$PIN"; changed=1; fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then dpkg --add-architecture arm64; changed=1; fi
stamp=/var/lib/apt/lists/.hakeys-updated
if [ $changed = 1 ] || [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ]; then
  apt-get update -q
  touch "$stamp"
fi

pkgs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross device-tree-compiler python3-cryptography python3-pyelftools
  dpkg-dev libssl-dev bison flex bc cpio xz-utils zstd gzip make perl openssl kmod e2fsprogs dosfstools fdisk"
missing=""
for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
[ -z "$missing" ] || apt-get install -y -q --no-install-recommends $missing
if ! command -v qemu-system-aarch64 >/dev/null || ! qemu-system-aarch64 --version | grep -q "version 10"; then
  apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-arm
fi
qemu-system-aarch64 --version | head -1
