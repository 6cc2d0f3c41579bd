#!/usr/bin/env bash
# Cross-build the normal-world binaries for aarch64: teectl (TEE backend,
# linked against Debian's libteec2:arm64), teed, hakeys-supplicant, rpmb-sim.
#   build-host.sh CACHE_DIR OUT_DIR
set -euo pipefail
C=$(realpath -m "${1:?usage: build-host.sh CACHE_DIR OUT_DIR}")
OUT=$(realpath -m "${2:?output directory}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
# optee-teec-sys links -lteec from $OPTEE_CLIENT_EXPORT/usr/lib: a directory
# of links to Debian's libteec2:arm64 (no -dev package needed).
EXP=$C/teec-export
mkdir -p "$EXP/usr/lib"
ln -sf "$C/x/libteec2/usr/lib/aarch64-linux-gnu/libteec.so.2" "$EXP/usr/lib/libteec.so"
export OPTEE_CLIENT_EXPORT=$EXP
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
(cd "$ROOT" && cargo build --release --quiet --target aarch64-unknown-linux-gnu \
  -p teectl -p teed --features teectl/tee,teed/tee -p hakeys-supplicant -p rpmb-sim \
  --bin teectl --bin teed --bin hakeys-supplicant --bin rpmb-sim)
T=$ROOT/target/aarch64-unknown-linux-gnu/release
for b in teectl teed hakeys-supplicant rpmb-sim; do
  [ -e "$T/$b" ] && cp "$T/$b" "$OUT/$b"
done
ls -la "$OUT"
