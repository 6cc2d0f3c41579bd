#!/usr/bin/env bash
# Fetch everything the QEMU target is built from, from the Debian archive
# only, into $1 (the cache): sources of TF-A and OP-TEE OS, and the arm64
# binary packages for the guest. Idempotent: a finished step leaves a stamp.
set -euo pipefail
C=$(realpath -m "${1:?usage: fetch.sh CACHE_DIR}")
mkdir -p "$C"/src "$C"/debs "$C"/x
export LC_ALL=C

# Source packages: try suites in order, say which failed (some files 404).
fetch_source() { # fetch_source PKG SUITE...
  local pkg=$1; shift
  [ -e "$C/src/.$pkg.done" ] && return 0
  for suite in "$@"; do
    echo "fetch.sh: source $pkg from $suite"
    if (cd "$C/src" && apt-get source -q --download-only "$pkg/$suite"); then
      (cd "$C/src" && for d in "${pkg}"_*.dsc; do dpkg-source -q -x "$d" >/dev/null; done)
      touch "$C/src/.$pkg.done"; return 0
    fi
    echo "fetch.sh: source $pkg/$suite could not be downloaded; trying the next suite" >&2
  done
  echo "fetch.sh: no suite gave the source of $pkg ($*)" >&2; return 1
}
fetch_source arm-trusted-firmware trixie sid
fetch_source optee-os sid trixie

# Guest binary packages (trixie, arm64 unless noted).
KPKG=$(apt-cache show linux-image-arm64:arm64/trixie | sed -n 's/^Depends: \(linux-image-[^ ]*\).*/\1/p' | head -1)
[ -n "$KPKG" ] || { echo "fetch.sh: cannot resolve the trixie arm64 kernel package" >&2; exit 1; }
DEBS="$KPKG busybox-static libc6 libgcc-s1 libteec2 libckteec0t64 optee-test-qemu
  cryptsetup-bin dmsetup libcryptsetup12 libblkid1 libpopt0 libuuid1 libdevmapper1.02.1 libjson-c5
  libssl3t64 libselinux1 libpcre2-8-0 libudev1 libcap2 libargon2-1 zlib1g libzstd1 liblzma5
  util-linux libcap-ng0 optee-os-dev opensc opensc-pkcs11 libeac3 libreadline8t64 libtinfo6 libglib2.0-0t64 libffi8 libmount1 libatomic1
  e2fsprogs libext2fs2t64 libcom-err2 libss2 fdisk libfdisk1 libsmartcols1 libncursesw6"
stamp="$C/debs/.done-$(echo $DEBS u-boot-qemu | md5sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  list=""
  for p in $DEBS; do list="$list $p:arm64/trixie"; done
  (cd "$C/debs" && apt-get download -q $list u-boot-qemu/trixie)
  rm -rf "$C/x"; mkdir -p "$C/x"
  for d in "$C"/debs/*.deb; do n=$(basename "$d"); n=${n%%_*}; mkdir -p "$C/x/$n"; dpkg -x "$d" "$C/x/$n"; done
  touch "$stamp"
fi
echo "fetch.sh: done ($(ls "$C/x" | wc -l) packages extracted, kernel $KPKG)"
