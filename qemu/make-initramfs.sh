#!/usr/bin/env bash
# Assemble the guest initramfs: busybox, the libraries each binary needs
# (its ELF NEEDED closure, from the Debian arm64 packages), kernel modules
# with their dependencies, our TA and host binaries, OP-TEE's test suite.
#   make-initramfs.sh CACHE_DIR OUT.cpio.gz
# The file layout matches what the Buildroot packages install (see
# buildroot/ and tests: /usr/bin/teectl, /usr/sbin/hakeys-supplicant,
# /lib/optee_armtz/<uuid>.ta).
set -euo pipefail
C=$(realpath -m "${1:?usage: make-initramfs.sh CACHE_DIR OUT.cpio.gz}")
OUTF=$(realpath -m "${2:?output file}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
X=$C/x
O=$C/out
# Staging next to the output, so that two images can be made side by side.
R=${OUTF%.cpio.gz}.rootfs
KV=$(ls "$X"/linux-image-*/usr/lib/modules/)
MODDIR=$(ls -d "$X"/linux-image-*/usr/lib/modules/"$KV")
rm -rf "$R"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/lib/aarch64-linux-gnu,usr/lib/modules,usr/lib/optee_armtz,proc,sys,dev,tmp,run,etc,root,var/lib,mnt}
ln -s usr/lib "$R/lib"
cp "$X/busybox-static/usr/bin/busybox" "$R/bin/busybox"
L=$R/usr/lib/aarch64-linux-gnu
cp -a "$X"/libc6/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 "$L/"
ln -s aarch64-linux-gnu/ld-linux-aarch64.so.1 "$R/usr/lib/ld-linux-aarch64.so.1"

# Every library directory of the extracted packages, to resolve NEEDED.
LIBDIRS=$(find "$X" -type d \( -path '*/usr/lib/aarch64-linux-gnu' -o -path '*/lib/aarch64-linux-gnu' \) | sort -u)
find_lib() {
  for d in $LIBDIRS; do [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }; done
  return 1
}
copy_closure() { # copy_closure ELF...: copy every NEEDED library, recursively
  local todo="$*" f n lib
  while [ -n "$todo" ]; do
    set -- $todo; f=$1; shift; todo="$*"
    for n in $(aarch64-linux-gnu-readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      [ -e "$L/$n" ] && continue
      lib=$(find_lib "$n") || { echo "make-initramfs.sh: $(basename "$f") needs $n, which no fetched package provides" >&2; exit 1; }
      cp -L "$lib" "$L/$n"
      todo="$todo $L/$n"
    done
  done
}
install_bin() { # install_bin SRC DEST_IN_ROOTFS
  mkdir -p "$(dirname "$R/$2")"; cp -L "$1" "$R/$2"; chmod 755 "$R/$2"; copy_closure "$R/$2"
}

# Our binaries and TA.
for b in teectl hakeys-supplicant rpmb-sim; do install_bin "$O/bin/$b" "/usr/bin/$b"; done
[ -e "$O/bin/teed" ] && install_bin "$O/bin/teed" /usr/bin/teed
mv "$R/usr/bin/hakeys-supplicant" "$R/usr/sbin/hakeys-supplicant"
UUID=$(tr -d ' \n' < "$ROOT/proto/uuid.txt")
cp "$O/ta/$UUID.ta" "$R/usr/lib/optee_armtz/"
# The previous release's TA, if built (`cargo xtask qemu-powercut` makes a
# board with format v1 state with it); test-only path, never loaded unless
# a test's supplicant is pointed at it.
if [ -e "$O/ta-v1/$UUID.ta" ]; then
  mkdir -p "$R/usr/lib/hakeys-test/ta-v1"
  cp "$O/ta-v1/$UUID.ta" "$R/usr/lib/hakeys-test/ta-v1/"
fi
# cryptsetup for the LUKS step; xtest and its TAs; pkcs11-tool and the
# PKCS#11 TA for the benchmark comparison.
install_bin "$X/cryptsetup-bin/usr/sbin/cryptsetup" /usr/sbin/cryptsetup
# dmsetup: qemu-data slows the end of a conversion (dm-delay) to aim a cut.
install_bin "$(ls "$X"/dmsetup/usr/sbin/dmsetup "$X"/dmsetup/sbin/dmsetup 2>/dev/null | head -1)" /usr/sbin/dmsetup
install_bin "$X/optee-test-qemu/usr/bin/xtest" /usr/bin/xtest
cp "$X"/optee-test-qemu/usr/lib/optee_armtz/*.ta "$R/usr/lib/optee_armtz/"
cp "$O"/optee/export-ta_arm64/ta/*.ta "$R/usr/lib/optee_armtz/" 2>/dev/null || true
install_bin "$X/opensc/usr/bin/pkcs11-tool" /usr/bin/pkcs11-tool
# util-linux setpriv runs a caller as another uid (busybox has no su/chpst,
# and its own setpriv applet cannot change uids): a private path so the
# busybox applet links never shadow it.
install_bin "$X/util-linux/usr/bin/setpriv" /usr/lib/hakeys-test/setpriv
# The data partition's life on LUKS (issue 15): e2fsprogs, util-linux's
# blkid, findfs, partx and sfdisk (busybox's are not the ones HA OS runs),
# and the board's own scripts from the Buildroot tree, unchanged.
for b in e2fsck resize2fs dumpe2fs mke2fs tune2fs; do install_bin "$X/e2fsprogs/usr/sbin/$b" "/usr/sbin/$b"; done
ln -sf mke2fs "$R/usr/sbin/mkfs.ext4"
ln -sf tune2fs "$R/usr/sbin/e2label"
for b in blkid findfs; do install_bin "$X/util-linux/usr/sbin/$b" "/usr/sbin/$b"; done
install_bin "$X/util-linux/usr/bin/partx" /usr/sbin/partx
install_bin "$X/fdisk/usr/sbin/sfdisk" /usr/sbin/sfdisk
mkdir -p "$R/usr/libexec"
for s in hakeys-encrypt-data hakeys-unlock-data hakeys-grow-data hakeys-wipe-data hakeys-detach-data; do
  cp "$ROOT/buildroot/package/hakeys-boot/$s" "$R/usr/libexec/$s"; chmod 755 "$R/usr/libexec/$s"
done
# The daemon's shipped default policy, where the systemd unit expects it.
mkdir -p "$R/etc/hakeys"
cp "$ROOT/systemd/teed-policy.toml" "$R/etc/hakeys/policy.toml"
# The shipped policy names Docker containers, and the guest runs none: the
# scenario starts teed with the uid-based policy (the one shipped before
# containers were recognised, kept as a test fixture) instead.
cp "$ROOT/host/teed/fixtures/policy-by-uid.toml" "$R/etc/hakeys/policy-by-uid.toml"
for so in libckteec.so.0; do
  lib=$(find_lib "$so"); cp -L "$lib" "$L/$so"; copy_closure "$L/$so"
done

# Kernel modules and their dependencies (modinfo reads arm64 modules too).
mod_path() { find "$MODDIR/kernel" -name "$1.ko*" | head -1; }
declare -A seen
add_mod() {
  local m=${1//-/_} p dep
  [ -n "${seen[$m]:-}" ] && return 0
  seen[$m]=1
  p=$(mod_path "$m"); [ -n "$p" ] || p=$(mod_path "${m//_/-}")
  [ -n "$p" ] || { echo "make-initramfs.sh: kernel module $m not found" >&2; exit 1; }
  for dep in $(/sbin/modinfo -F depends "$p" | tr ',' ' '); do add_mod "$dep"; done
  case $p in *.xz) xz -dc "$p" ;; *.zst) zstd -dc "$p" ;; *) cat "$p" ;; esac > "$R/usr/lib/modules/$m.ko"
  echo "$m" >> "$R/usr/lib/modules/load-order"
}
for m in tee optee virtio_blk dm_mod dm_crypt dm_delay xts af_alg algif_skcipher algif_hash ext4 crc32c_generic vfat nls_cp437 nls_ascii; do add_mod "$m"; done

cp "$ROOT/qemu/guest/init" "$R/init"
cp "$ROOT/qemu/guest/scenario.sh" "$R/usr/bin/hakeys-scenario"
cp "$ROOT/qemu/guest/powercut.sh" "$R/usr/bin/hakeys-powercut"
cp "$ROOT/qemu/guest/data.sh" "$R/usr/bin/hakeys-data"
mkdir -p "$R/usr/lib/hakeys-test"
cp "$ROOT/qemu/guest/lib.sh" "$R/usr/lib/hakeys-test/lib.sh"
chmod 755 "$R/init" "$R/usr/bin/hakeys-scenario" "$R/usr/bin/hakeys-powercut" "$R/usr/bin/hakeys-data"
# Written beside and renamed, so a QEMU starting meanwhile reads a whole image.
(cd "$R" && find . | sort | cpio -o -H newc --quiet -R 0:0 | gzip -6) > "$OUTF.tmp"
mv "$OUTF.tmp" "$OUTF"
echo "make-initramfs.sh: $OUTF ($(stat -c %s "$OUTF") bytes)"
