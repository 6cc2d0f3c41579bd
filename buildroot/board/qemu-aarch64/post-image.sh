#!/bin/sh
# Post-image script of hakeys_qemu_aarch64_defconfig. Assembles the QEMU
# flash image as qemu/build-firmware.sh does (TF-A's BL1 at 0, the FIP with
# BL2, BL31, OP-TEE and U-Boot at 256 KiB) and writes start-qemu.sh.
#   post-image.sh BINARIES_DIR
set -eu
images=${1:?usage: post-image.sh BINARIES_DIR}

rm -f "$images/flash.bin"
dd if="$images/bl1.bin" of="$images/flash.bin" bs=4096 conv=notrunc status=none
dd if="$images/fip.bin" of="$images/flash.bin" bs=4096 seek=64 conv=notrunc status=none

cat > "$images/start-qemu.sh" <<'START'
#!/bin/sh
# Boot the hakeys QEMU image: the same machine as `cargo xtask qemu-test`.
# RPMB lives in an rpmb-sim image (RPMB=..., default rpmb.img next to this
# script); create it once, on the host, with `rpmb-sim create rpmb.img`.
# OP-TEE's console goes to secure.log.
set -eu
cd "$(dirname "$0")"
rpmb=${RPMB:-rpmb.img}
[ -e "$rpmb" ] || { echo "start-qemu.sh: no $rpmb (rpmb-sim create $rpmb)" >&2; exit 1; }
exec qemu-system-aarch64 \
	-machine virt,secure=on,gic-version=3,virtualization=off \
	-cpu cortex-a57 -smp 2 -m 2048 -nographic \
	-bios flash.bin -kernel Image \
	-append "root=/dev/vda rootwait console=ttyAMA0" \
	-drive if=none,id=root,format=raw,file=rootfs.ext4 \
	-device virtio-blk-pci,drive=root,serial=root,romfile= \
	-drive "if=none,id=rpmb,format=raw,file=$rpmb" \
	-device virtio-blk-pci,drive=rpmb,serial=rpmb,romfile= \
	-serial mon:stdio -serial file:secure.log \
	"$@"
START
chmod 755 "$images/start-qemu.sh"
