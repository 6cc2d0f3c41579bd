#!/bin/sh
# The data partition's life on LUKS (issue 15), one step per boot, driven by
# `cargo xtask qemu-data` (xtask/src/qemu_data.rs): the board's own scripts
# from buildroot/package/hakeys-boot/ (installed unchanged in
# /usr/libexec), on a GPT disk whose partition `hassos-data` holds ext4
# with test files, and a vfat "boot" disk mounted at /mnt/boot as on HA OS.
# Test data only; no real secret is ever printed.
STEP=$1
. /usr/lib/hakeys-test/lib.sh

mkdir -p /mnt/boot /mnt/data /blobs
mount -t vfat "$(disk boot)" /mnt/boot || echo "HAKEYS: cannot mount the boot disk"
tar -xf "$(disk blobs)" -C /blobs 2>/dev/null
# The board's data partition: partition 1 of the "data" disk (the scripts
# under test find it by its name where that is their job).
DATA=$(disk data)1
[ -b "$DATA" ] || { echo "HAKEYS: no data partition:"; cat /proc/partitions; blkid; }
export HAKEYS_DATA_DEVICE="$DATA" HAKEYS_DATA_BLOB=/mnt/boot/hakeys/data.blob HAKEYS_WAIT_SECONDS=5 HAKEYS_PROGRESS_SECONDS=1
echo "HAKEYS: data partition $DATA"

# verify NAME: mount the opened file system read-only, check every file
# against the manifest the host wrote, report its size.
verify() {
  mount -t ext4 -o ro /dev/mapper/hassos-data /mnt/data 2>/tmp/err.mount
  echo "HAKEYS-RESULT $1-mount rc=$? err=$(head -c 300 /tmp/err.mount | tr '\n' ' ')"
  (cd /mnt/data && sha256sum -c /blobs/manifest > /tmp/check.out 2>&1)
  echo "HAKEYS-RESULT $1-files rc=$? out=ok=$(grep -c ': OK$' /tmp/check.out) failed=$(grep -vc ': OK$' /tmp/check.out)"
  grep -v ': OK$' /tmp/check.out | head -5 | sed 's/^/HAKEYS: check | /'
  umount /mnt/data
  blocks=$(dumpe2fs -h /dev/mapper/hassos-data 2>/dev/null | sed -n 's/^Block count: *//p')
  bsize=$(dumpe2fs -h /dev/mapper/hassos-data 2>/dev/null | sed -n 's/^Block size: *//p')
  echo "HAKEYS-RESULT $1-size rc=0 out=fs_kib=$(( blocks * bsize / 1024 )) part_kib=$(( $(blockdev --getsize64 "$DATA") / 1024 ))"
}

case "$STEP" in
data-init)
  r data-init "" teectl init
  r data-type-before "" blkid -o value -s TYPE "$DATA"
  ;;
data-encrypt)
  # Cut at any moment by the host in the power-cut series.
  # The script's messages reach the console as they come (the host cuts
  # the power relative to them).
  # Board A also enrols a recovery passphrase (the board's cut series
  # has none on its blobs disk).
  if [ -e /blobs/recovery-passphrase ]; then
    mkdir -p /mnt/boot/hakeys && cp /blobs/recovery-passphrase /mnt/boot/hakeys/recovery-passphrase
    export HAKEYS_RECOVERY_PASSPHRASE_FILE=/mnt/boot/hakeys/recovery-passphrase
  fi
  echo "HAKEYS-ENC start"
  t0=$(now_ms)
  { /usr/libexec/hakeys-encrypt-data 2>&1; echo "$?" > /tmp/rc.enc; } |
    while IFS= read -r l; do echo "HAKEYS: enc | $l"; done
  t=$(( $(now_ms) - t0 ))
  echo "HAKEYS-RESULT data-encrypt rc=$(cat /tmp/rc.enc) out=ms=$t"
  sync
  ;;
data-encrypt-slow-end)
  # Board data-end: a cut after cryptsetup committed the last block and
  # before it finished the header. In between it wipes the moved segment
  # (its plaintext copy of the partition's start, kept in the partition's
  # last 16 MiB); writes there are delayed here (dm-delay, 250 ms each), so
  # that wipe takes seconds and the host's cut, aimed after the last block's
  # progress line, lands in it. The script sees the partition through a
  # device-mapper device that maps it 1:1; the next boot uses the partition.
  S=$(blockdev --getsz "$DATA"); M=32768
  printf '0 %s linear %s 0\n%s %s delay %s %s 0 %s %s 250\n' \
    $((S - M)) "$DATA" $((S - M)) $M "$DATA" $((S - M)) "$DATA" $((S - M)) |
    DM_DISABLE_UDEV=1 dmsetup create hakeys-slow || echo "HAKEYS: dmsetup create failed"
  # No udev in this guest: the node is made here.
  dmsetup mknodes hakeys-slow
  [ -b /dev/mapper/hakeys-slow ] || echo "HAKEYS: no /dev/mapper/hakeys-slow: $(ls /dev/mapper)"
  export HAKEYS_DATA_DEVICE=/dev/mapper/hakeys-slow
  echo "HAKEYS-ENC start"
  t0=$(now_ms)
  { /usr/libexec/hakeys-encrypt-data 2>&1; echo "$?" > /tmp/rc.enc; } |
    while IFS= read -r l; do
      echo "HAKEYS: enc | $l"
      case $l in
      '{'*)
        done_b=${l#*\"device_bytes\":\"}; size_b=${l#*\"device_size\":\"}
        [ "${done_b%%\"*}" = "${size_b%%\"*}" ] && echo "HAKEYS-ENC last-block-done"
        ;;
      esac
    done
  echo "HAKEYS-RESULT data-encrypt rc=$(cat /tmp/rc.enc) out=ms=$(( $(now_ms) - t0 ))"
  sync
  ;;
data-verify)
  # The boot after the conversion, as a board runs it: the unlock unit first.
  t0=$(now_ms)
  /usr/libexec/hakeys-unlock-data > /tmp/out.unlock 2>&1
  rc=$?
  echo "HAKEYS-RESULT data-unlock rc=$rc out=ms=$(( $(now_ms) - t0 )) err=$(tr '\n' ' ' < /tmp/out.unlock | head -c 300)"
  verify data-verify
  r data-type-after "" blkid -o value -s TYPE "$DATA"
  r data-kdf "" sh -c "cryptsetup luksDump '$DATA' | grep -E 'PBKDF|Iterations|Label|Requirements'"
  r data-encrypt-again "" /usr/libexec/hakeys-encrypt-data
  # As the boot unit runs it at every later boot: silent, no work.
  r data-encrypt-unit-again "" /usr/libexec/hakeys-encrypt-data --if-requested
  if [ -e /blobs/recovery-passphrase ]; then
    r data-recovery-passphrase "" cryptsetup open --test-passphrase --key-file /blobs/recovery-passphrase "$DATA"
    r data-recovery-file-removed "" sh -c "[ ! -e /mnt/boot/hakeys/recovery-passphrase ]"
  fi
  cryptsetup close hassos-data
  ;;
data-bench)
  # Boot cost (docs/BENCHMARKS-qemu.md). First thing after boot: a cold
  # unseal (the TA is loaded by this call), then warm ones; cryptsetup
  # open with the same key alone; teectl ping as a new process; the
  # unlock script, warm (it ends the boot phase, so it comes last).
  N=${BENCH_N:-10}
  t0=$(now_ms)
  teectl --backend tee unseal --namespace boot/luks-data < "$HAKEYS_DATA_BLOB" > /tmp/k
  echo "HAKEYS-BENCH cold-unseal runs=1 total_ms=$(( $(now_ms) - t0 ))"
  t0=$(now_ms); i=0
  while [ $i -lt "$N" ]; do teectl --backend tee unseal --namespace boot/luks-data < "$HAKEYS_DATA_BLOB" > /dev/null; i=$((i+1)); done
  echo "HAKEYS-BENCH warm-unseal runs=$N total_ms=$(( $(now_ms) - t0 ))"
  t0=$(now_ms); i=0
  while [ $i -lt "$N" ]; do teectl --backend tee ping > /dev/null; i=$((i+1)); done
  echo "HAKEYS-BENCH ping-process runs=$N total_ms=$(( $(now_ms) - t0 ))"
  total=0; i=0
  while [ $i -lt 5 ]; do
    t0=$(now_ms)
    cryptsetup open --key-file /tmp/k "$DATA" hassos-data || echo "HAKEYS: cryptsetup open failed"
    total=$(( total + $(now_ms) - t0 ))
    cryptsetup close hassos-data
    i=$((i+1))
  done
  echo "HAKEYS-BENCH cryptsetup-open runs=5 total_ms=$total"
  rm -f /tmp/k
  t0=$(now_ms)
  /usr/libexec/hakeys-unlock-data > /tmp/out.unlock 2>&1 || echo "HAKEYS: unlock failed: $(cat /tmp/out.unlock)"
  echo "HAKEYS-BENCH unlock-script-warm runs=1 total_ms=$(( $(now_ms) - t0 ))"
  cryptsetup close hassos-data
  ;;
data-grow)
  # The disk grew (the host made its image larger): unlock, grow, check.
  # The order of the units: the partition before the unlock, the file
  # system after it.
  r data-grow-partition "" /usr/libexec/hakeys-grow-data partition
  r data-grow-unlock "" /usr/libexec/hakeys-unlock-data
  r data-grow "" /usr/libexec/hakeys-grow-data filesystem
  verify data-grow
  r data-grow-again-partition "" /usr/libexec/hakeys-grow-data partition
  r data-grow-again "" /usr/libexec/hakeys-grow-data filesystem
  cryptsetup close hassos-data
  ;;
data-detach)
  # An external disk with two more partitions named hassos-data (one plain
  # ext4, one made LUKS2 here): both are renamed, the board's own is not.
  EXT=$(disk ext)
  head -c 64 /dev/urandom > /tmp/throwaway.key
  r data-detach-prep "" cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /tmp/throwaway.key "${EXT}2"
  r data-detach-before "" sh -c "blkid -o device -t PARTLABEL=hassos-data | sort | tr '\n' ' '"
  r data-detach "" env HAKEYS_ROOT_DISK="$(disk data)" /usr/libexec/hakeys-detach-data
  r data-detach-after "" sh -c "blkid -o device -t PARTLABEL=hassos-data | tr '\n' ' '"
  r data-detach-renamed "" sh -c "blkid -o device -t PARTLABEL=hassos-data-dis | sort | tr '\n' ' '"
  r data-detach-ext4-label "" blkid -o value -s LABEL "${EXT}1"
  r data-detach-again "" env HAKEYS_ROOT_DISK="$(disk data)" /usr/libexec/hakeys-detach-data
  ;;
data-wipe)
  # Factory reset on LUKS2: a new key, a new header, an empty file system;
  # the old key opens nothing any more.
  cp "$HAKEYS_DATA_BLOB" /tmp/old.blob
  r data-wipe "" /usr/libexec/hakeys-wipe-data
  teectl --backend tee unseal --namespace boot/luks-data < /tmp/old.blob | cryptsetup open --test-passphrase --key-file - "$DATA" 2>/tmp/err.old
  echo "HAKEYS-RESULT data-wipe-old-key rc=$? err=$(head -c 200 /tmp/err.old | tr '\n' ' ')"
  r data-wipe-unlock "" /usr/libexec/hakeys-unlock-data
  mount -t ext4 -o ro /dev/mapper/hassos-data /mnt/data
  r data-wipe-empty "" sh -c "ls -A /mnt/data | tr '\n' ' '"
  umount /mnt/data
  cryptsetup close hassos-data
  ;;
*)
  echo "HAKEYS: unknown data step $STEP"
  ;;
esac
umount /mnt/boot 2>/dev/null
