#!/usr/bin/env bash
# Build the hakeys TA against an OP-TEE TA dev kit, strip and sign it.
#   build-ta.sh TA_DEV_KIT_DIR SIGNING_KEY.pem OUT_DIR
# Produces OUT_DIR/<uuid>.ta and OUT_DIR/hakeys-ta.elf (unstripped, for sizes).
set -euo pipefail
KIT=$(realpath "${1:?usage: build-ta.sh TA_DEV_KIT_DIR KEY.pem OUT_DIR}")
KEY=$(realpath "${2:?signing key}")
OUT=$(realpath -m "${3:?output directory}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
UUID=$(tr -d ' \n' < "$ROOT/proto/uuid.txt")
# OP-TEE's TA anti-rollback compares this number (ta_ver.db in secure
# storage) and refuses to load an older TA once a newer one ran: derive it
# from the release, MAJOR*65536 + MINOR*256 + PATCH (docs/buildroot.md).
VER=$(sed -n 's/^version = "\([0-9]*\.[0-9]*\.[0-9]*\)"$/\1/p' "$ROOT/ta/Cargo.toml" | head -n 1)
[ -n "$VER" ] || { echo "build-ta.sh: no MAJOR.MINOR.PATCH version in ta/Cargo.toml" >&2; exit 1; }
TA_VERSION=$(echo "$VER" | awk -F. '{ print $1 * 65536 + $2 * 256 + $3 }')
mkdir -p "$OUT"
rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
(cd "$ROOT/ta" && TA_DEV_KIT_DIR="$KIT" CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
  cargo build --release --quiet)
ELF=$ROOT/ta/target/aarch64-unknown-linux-gnu/release/hakeys-ta
cp "$ELF" "$OUT/hakeys-ta.elf"
aarch64-linux-gnu-objcopy --strip-unneeded "$ELF" "$OUT/hakeys-ta.stripped.elf"
# OP-TEE's signing script needs Debian's python3 (cryptography).
PATH=/usr/bin:/bin:$PATH python3 "$KIT/scripts/sign_encrypt.py" sign-enc \
  --uuid "$UUID" --ta-version "$TA_VERSION" --key "$KEY" \
  --in "$OUT/hakeys-ta.stripped.elf" --out "$OUT/$UUID.ta"
echo "build-ta.sh: $OUT/$UUID.ta ($(stat -c %s "$OUT/$UUID.ta") bytes)"
