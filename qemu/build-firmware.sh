#!/usr/bin/env bash
# Build TF-A and OP-TEE OS (RPMB secure storage) for QEMU virt from the
# Debian sources fetched by fetch.sh, and assemble flash.bin (bl1 + FIP with
# OP-TEE as BL32 and Debian's U-Boot as BL33). Outputs in $1/out. Rebuilds
# only when the configuration below changes.
set -euo pipefail
C=$(realpath -m "${1:?usage: build-firmware.sh CACHE_DIR}")
JOBS=${JOBS:-$(nproc)}
# OP-TEE and TF-A need Debian's python3 modules (cryptography, pyelftools):
# make sure no other python3 shadows /usr/bin/python3.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
TFA=$(ls -d "$C"/src/arm-trusted-firmware-*/ | head -1)
OPTEE=$(ls -d "$C"/src/optee-os-*/ | head -1)
X=$C/x
O=$C/out
# One signing key for every TA in the image: Debian trixie's dev key, which
# signed the xtest TAs in optee-test-qemu; our TA is signed with it too.
TA_KEY=$X/optee-os-dev/usr/lib/optee-os-dev/vexpress-qemu_armv8a/keys/default.pem

TFA_FLAGS="CROSS_COMPILE=aarch64-linux-gnu- PLAT=qemu SPD=opteed QEMU_USE_GIC_DRIVER=QEMU_GICV3
  ARM_TSP_RAM_LOCATION=tdram BL32_RAM_LOCATION=tdram DEBUG=0 LOG_LEVEL=40"
# CFG_REE_FS=n: RPMB is the only secure storage (OP-TEE would otherwise keep
# the REE FS hash in RPMB and need /data/tee to persist too).
# CFG_CORE_RESERVED_SHM=n: U-Boot loads the kernel over the static SHM.
# CFG_RPMB_ANNOUNCE_PROBE_CAP=n: RPMB frames go through the supplicant.
OPTEE_FLAGS="CROSS_COMPILE=aarch64-linux-gnu- PLATFORM=vexpress-qemu_armv8a
  CFG_TEE_CORE_LOG_LEVEL=2 CFG_ARM_GICV3=y CFG_ARM64_core=y
  CFG_USER_TA_TARGETS=ta_arm64 CFG_RPMB_FS=y CFG_REE_FS=n
  CFG_RPMB_WRITE_KEY=y CFG_RPMB_TESTKEY=y CFG_RPMB_ANNOUNCE_PROBE_CAP=n
  CFG_CORE_RESERVED_SHM=n CFG_PKCS11_TA=y DEBUG=0"
sum=$(echo "$TFA $OPTEE $TFA_FLAGS $OPTEE_FLAGS $(md5sum < "$0")" | md5sum | cut -c1-16)
if [ -e "$O/.firmware-$sum" ]; then echo "build-firmware.sh: up to date"; exit 0; fi
rm -rf "$O/optee" "$O/flash.bin" "$O"/.firmware-*
mkdir -p "$O"

echo "build-firmware.sh: TF-A"
make -s -C "$TFA" -j"$JOBS" $TFA_FLAGS bl1 bl2 bl31 fiptool
echo "build-firmware.sh: OP-TEE OS"
make -s -C "$OPTEE" -j"$JOBS" $OPTEE_FLAGS O="$O/optee" TA_SIGN_KEY="$TA_KEY"

B=$TFA/build/qemu/release
"$TFA/tools/fiptool/fiptool" create --tb-fw "$B/bl2.bin" --soc-fw "$B/bl31.bin" \
  --tos-fw "$O/optee/core/tee-header_v2.bin" \
  --tos-fw-extra1 "$O/optee/core/tee-pager_v2.bin" \
  --tos-fw-extra2 "$O/optee/core/tee-pageable_v2.bin" \
  --nt-fw "$X/u-boot-qemu/usr/lib/u-boot/qemu_arm64/u-boot.bin" "$O/fip.bin"
rm -f "$O/flash.bin"
dd if="$B/bl1.bin" of="$O/flash.bin" bs=4096 conv=notrunc status=none
dd if="$O/fip.bin" of="$O/flash.bin" bs=4096 seek=64 conv=notrunc status=none
KV=$(ls "$X"/linux-image-*/usr/lib/modules/)
cp "$X"/linux-image-*/boot/vmlinuz-"$KV" "$O/Image"
cp "$TA_KEY" "$O/ta-sign-key.pem"
touch "$O/.firmware-$sum"
echo "build-firmware.sh: done: $O/flash.bin, $O/Image, TA dev kit $O/optee/export-ta_arm64"
