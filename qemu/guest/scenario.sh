#!/bin/sh
# hakeys end-to-end scenario, one step per boot (see xtask/src/qemu.rs, which
# starts each boot as a new QEMU process on the same disks and asserts on the
# HAKEYS-RESULT lines). Test secrets only; real secrets are never printed.
STEP=$1
. /usr/lib/hakeys-test/lib.sh

LUKS=$(disk luks)
case "$STEP" in
boot1)
  r status-before "" teectl status --json
  c init "" teectl init
  r init-again "" teectl init
  printf 'old-secret' > /tmp/old.txt
  c seal-old /tmp/old.txt teectl seal --namespace ha/core
  cp /tmp/out.seal-old /tmp/old.blob
  c rotate "" teectl rotate
  printf 'the-secret' > /tmp/secret.txt
  c seal-secret /tmp/secret.txt teectl seal --namespace ha/core
  cp /tmp/out.seal-secret /tmp/secret.blob
  head -c 64 /dev/urandom > /tmp/luks.key
  r seal-luks /tmp/luks.key teectl seal --namespace boot/luks-data
  cp /tmp/out.seal-luks /tmp/luks.blob
  c unseal-secret-boot1 /tmp/secret.blob teectl unseal
  r luks-format "" cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /tmp/luks.key "$LUKS"
  r luks-open-1 "" cryptsetup open "$LUKS" data --key-file /tmp/luks.key
  printf 'HAKEYS-LUKS-MARKER' | dd of=/dev/mapper/data bs=512 conv=sync 2>/dev/null
  sync
  r luks-close-1 "" cryptsetup close data
  c retire "" teectl retire --below 2
  r unseal-old-retired /tmp/old.blob teectl unseal
  rm -f /tmp/luks.key
  ;;
boot2)
  mkdir -p /blobs
  tar -xf "$(disk blobs)" -C /blobs
  r status-after-reboot "" teectl status --json
  # The boot unit's job, first thing: the unsealed key goes straight into
  # cryptsetup (the first unseal outside boot/ would end the boot phase).
  teectl unseal < /blobs/luks.blob | cryptsetup open "$LUKS" data --key-file - 2>/tmp/err.luks
  echo "HAKEYS-RESULT luks-open-with-unsealed-key rc=$? err=$(head -c 300 /tmp/err.luks | tr '\n' ' ')"
  r luks-marker "" sh -c "dd if=/dev/mapper/data bs=18 count=1 2>/dev/null"
  r luks-close "" cryptsetup close data
  h unseal-secret /blobs/secret.blob teectl unseal
  r boot-done "" teectl boot-done
  r unseal-luks-after-boot-done /blobs/luks.blob teectl unseal
  r status-after-boot-done "" teectl status --json
  r unseal-tampered /blobs/tampered.blob teectl unseal
  r unseal-old-retired /blobs/old.blob teectl unseal
  h unseal-secret-after-boot-done /blobs/secret.blob teectl unseal
  # The TA checks its clients: a non-root process that can open /dev/tee0
  # (uid 4242 in the TEE client group 990) gets what the daemon needs and
  # is refused lifecycle and recovery operations, boot/ and unseal without
  # a namespace; nothing changes. (Root's rotate and retire in boot 1 are
  # the other half: root's login identity is recognised.)
  AS_TEE_USER="/usr/lib/hakeys-test/setpriv --reuid 4242 --regid 4242 --groups 990"
  r nonroot-status "" $AS_TEE_USER teectl --backend tee status --json
  r nonroot-rotate "" $AS_TEE_USER teectl --backend tee rotate
  r nonroot-retire "" $AS_TEE_USER teectl --backend tee retire --below 3
  teectl pubkey > /tmp/some-key.pem
  r nonroot-escrow "" $AS_TEE_USER teectl --backend tee escrow --to /tmp/some-key.pem
  r nonroot-init "" $AS_TEE_USER teectl --backend tee init
  r nonroot-unseal-any /blobs/secret.blob $AS_TEE_USER teectl --backend tee unseal
  h nonroot-unseal-own /blobs/secret.blob $AS_TEE_USER teectl --backend tee unseal --namespace ha/core
  printf 'planted' > /tmp/planted.txt
  r nonroot-seal-boot /tmp/planted.txt $AS_TEE_USER teectl --backend tee seal --namespace boot/planted
  r status-after-nonroot "" teectl status --json
  # The daemon on the real TEE as on a board: its own user (uid 900) in the
  # TEE client group, so the TA gives it a client's rights only. The
  # uid-based policy (the shipped one names Docker containers, and this
  # guest runs none): uid 8123 is Home Assistant Core (ha/*); uid 4242 is
  # in no rule.
  mkdir -p /run/hakeys && chown 900:900 /run/hakeys
  /usr/lib/hakeys-test/setpriv --reuid 900 --regid 900 --groups 990 teed --backend tee --socket /run/hakeys/teed.sock --policy /etc/hakeys/policy-by-uid.toml > /run/teed.log 2>&1 &
  TEED=$!
  i=0; while [ ! -S /run/hakeys/teed.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  AS_HA="/usr/lib/hakeys-test/setpriv --reuid 8123 --regid 8123 --clear-groups"
  AS_OTHER="/usr/lib/hakeys-test/setpriv --reuid 4242 --regid 4242 --clear-groups"
  r daemon-status-as-ha "" $AS_HA teectl status --json
  h daemon-unseal-as-ha /blobs/secret.blob $AS_HA teectl unseal
  r daemon-unseal-boot-as-ha /blobs/luks.blob $AS_HA teectl unseal
  r daemon-unseal-as-other /blobs/secret.blob $AS_OTHER teectl unseal
  r daemon-unseal-tampered-as-ha /blobs/tampered.blob $AS_HA teectl unseal
  N=${BENCH_N:-20}
  t0=$(now_ms); i=0
  while [ $i -lt "$N" ]; do $AS_HA teectl unseal < /blobs/secret.blob > /dev/null || echo "HAKEYS: daemon unseal failed"; i=$((i+1)); done
  echo "HAKEYS-BENCH daemon-unseal runs=$N total_ms=$(( $(now_ms) - t0 ))"
  t0=$(now_ms); i=0
  while [ $i -lt "$N" ]; do teectl unseal < /blobs/secret.blob > /dev/null || echo "HAKEYS: direct unseal failed"; i=$((i+1)); done
  echo "HAKEYS-BENCH direct-unseal runs=$N total_ms=$(( $(now_ms) - t0 ))"
  kill $TEED
  sed 's/^/HAKEYS: teed | /' /run/teed.log | head -40
  ;;
boot3)
  # The unlock step opens the volume but never runs `teectl boot-done` (it
  # crashed, or timed out): teed must end the boot phase itself before it
  # serves anyone, so boot/ is refused from then on.
  mkdir -p /blobs
  tar -xf "$(disk blobs)" -C /blobs
  r boot3-status-before "" teectl status --json
  teectl unseal < /blobs/luks.blob | cryptsetup open "$LUKS" data --key-file - 2>/tmp/err.luks
  echo "HAKEYS-RESULT boot3-luks-open rc=$? err=$(head -c 300 /tmp/err.luks | tr '\n' ' ')"
  r boot3-luks-close "" cryptsetup close data
  # teed as on a board (uid 900, TEE client group): a client identity for
  # the TA, which may end the boot phase but nothing more.
  mkdir -p /run/hakeys && chown 900:900 /run/hakeys
  /usr/lib/hakeys-test/setpriv --reuid 900 --regid 900 --groups 990 teed --backend tee --socket /run/hakeys/teed.sock --policy /etc/hakeys/policy-by-uid.toml > /run/teed.log 2>&1 &
  TEED=$!
  # teed binds its socket only after the boot phase is over.
  i=0; while [ ! -S /run/hakeys/teed.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  r boot3-teed-ended-boot-phase "" grep -c "the boot phase was still open" /run/teed.log
  r boot3-status-after-teed "" teectl status --json
  r boot3-unseal-luks /blobs/luks.blob teectl unseal
  r boot3-daemon-unseal-luks-as-ha /blobs/luks.blob /usr/lib/hakeys-test/setpriv --reuid 8123 --regid 8123 --clear-groups teectl unseal
  h boot3-unseal-secret /blobs/secret.blob teectl unseal
  kill $TEED
  sed 's/^/HAKEYS: teed | /' /run/teed.log | head -20
  ;;
bench)
  N=${BENCH_N:-30}
  c init "" teectl init
  head -c 1024 /dev/urandom > /tmp/pt
  c seal-1k /tmp/pt teectl seal --namespace ha/core
  cp /tmp/out.seal-1k /tmp/b
  rpmb_mark
  h unseal-1k /tmp/b teectl unseal
  rpmb_report unseal-1k
  c rotate "" teectl rotate
  r ping "" teectl ping --count 200
  t0=$(now_ms); i=0
  while [ $i -lt "$N" ]; do teectl unseal < /tmp/b > /dev/null || echo "HAKEYS: unseal failed"; i=$((i+1)); done
  echo "HAKEYS-BENCH teectl-unseal-1k runs=$N total_ms=$(( $(now_ms) - t0 ))"
  # The same 1 KiB AES-GCM decrypt through OP-TEE's PKCS#11 TA.
  M=/usr/lib/aarch64-linux-gnu/libckteec.so.0
  P="pkcs11-tool --module $M"
  r p11-init-token "" $P --init-token --slot 0 --label hakeys --so-pin 12345678
  r p11-init-pin "" $P --token-label hakeys --login --login-type so --so-pin 12345678 --init-pin --pin 87654321
  r p11-keygen "" $P --token-label hakeys --login --pin 87654321 --keygen --key-type AES:32 --label bench --id 01
  IV=000102030405060708090a0b
  r p11-encrypt "" $P --token-label hakeys --login --pin 87654321 --encrypt --id 01 --mechanism AES-GCM --iv $IV --tag-bits-len 128 --input-file /tmp/pt --output-file /tmp/ct
  r p11-decrypt "" $P --token-label hakeys --login --pin 87654321 --decrypt --id 01 --mechanism AES-GCM --iv $IV --tag-bits-len 128 --input-file /tmp/ct --output-file /tmp/pt2
  r p11-roundtrip "" cmp /tmp/pt /tmp/pt2
  t0=$(now_ms); i=0
  while [ $i -lt "$N" ]; do $P --token-label hakeys --login --pin 87654321 --decrypt --id 01 --mechanism AES-GCM --iv $IV --tag-bits-len 128 --input-file /tmp/ct --output-file /tmp/pt2 >/dev/null 2>&1 || echo "HAKEYS: p11 decrypt failed"; i=$((i+1)); done
  echo "HAKEYS-BENCH pkcs11-decrypt-1k runs=$N total_ms=$(( $(now_ms) - t0 ))"
  # Through the daemon on the TEE, as Home Assistant Core (uid 8123, ha/*).
  mkdir -p /run/hakeys
  teed --backend tee --socket /run/hakeys/teed.sock --policy /etc/hakeys/policy-by-uid.toml > /run/teed.log 2>&1 &
  TEED=$!
  i=0; while [ ! -S /run/hakeys/teed.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  t0=$(now_ms); i=0
  while [ $i -lt "$N" ]; do /usr/lib/hakeys-test/setpriv --reuid 8123 --regid 8123 --clear-groups teectl unseal < /tmp/b > /dev/null || echo "HAKEYS: daemon unseal failed"; i=$((i+1)); done
  echo "HAKEYS-BENCH daemon-unseal-1k runs=$N total_ms=$(( $(now_ms) - t0 ))"
  kill $TEED
  ;;
mig-b1)
  # Migration (issue 10), board B's first boot: initialise, give out the
  # public key.
  c mig-b1-init "" teectl init
  r mig-b1-pubkey "" teectl pubkey
  f b.pem /tmp/out.mig-b1-pubkey
  ;;
mig-a1)
  # Board A, all in the boot phase: escrow to the recovery key, seal, move
  # to B with reseal (boot/ only with --allow-boot, only before boot-done).
  mkdir -p /blobs
  tar -xf "$(disk blobs)" -C /blobs
  r mig-a1-init "" teectl init
  r mig-a1-escrow "" teectl escrow --to /blobs/recovery.pem
  f escrow.txt /tmp/out.mig-a1-escrow
  r mig-a1-init-again "" teectl init
  printf 'mig-secret' > /tmp/m1.txt
  r mig-a1-seal /tmp/m1.txt teectl seal --namespace ha/core
  cp /tmp/out.mig-a1-seal /tmp/a.blob
  head -c 64 /dev/urandom > /tmp/luks.key
  echo "HAKEYS-RESULT mig-a1-luks-key rc=0 sha256=$(sha256sum < /tmp/luks.key | cut -d' ' -f1)"
  r mig-a1-seal-luks /tmp/luks.key teectl seal --namespace boot/luks-data
  rm -f /tmp/luks.key
  cp /tmp/out.mig-a1-seal-luks /tmp/luks.blob
  c mig-a1-rotate "" teectl rotate
  printf 'mig-secret-2' > /tmp/m2.txt
  r mig-a1-seal-2 /tmp/m2.txt teectl seal --namespace ha/core
  r mig-a1-reseal /tmp/a.blob teectl reseal --to /blobs/b.pem
  r mig-a1-reseal-luks-no-allow /tmp/luks.blob teectl reseal --to /blobs/b.pem
  r mig-a1-reseal-luks /tmp/luks.blob teectl reseal --to /blobs/b.pem --allow-boot
  r mig-a1-boot-done "" teectl boot-done
  r mig-a1-reseal-luks-after-boot-done /tmp/luks.blob teectl reseal --to /blobs/b.pem --allow-boot
  ;;
mig-b2)
  # Board B opens what A resealed to it. The LUKS key is an offline blob in
  # boot/, which boards refuse until root imports it (rewrap
  # --import-offline); then it keys B's own volume.
  mkdir -p /blobs
  tar -xf "$(disk blobs)" -C /blobs
  r mig-b2-unseal-luks-offline /blobs/luks-for-b.blob teectl unseal
  r mig-b2-import-luks /blobs/luks-for-b.blob teectl rewrap --import-offline
  cp /tmp/out.mig-b2-import-luks /tmp/luks-b.blob
  h mig-b2-unseal-luks /tmp/luks-b.blob teectl unseal
  r mig-b2-luks-format "" cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /tmp/out.mig-b2-unseal-luks "$LUKS"
  r mig-b2-luks-open "" cryptsetup open "$LUKS" data --key-file /tmp/out.mig-b2-unseal-luks
  printf 'HAKEYS-MIGRATED-MARKER' | dd of=/dev/mapper/data bs=512 conv=sync 2>/dev/null
  sync
  r mig-b2-luks-close "" cryptsetup close data
  rm -f /tmp/out.mig-b2-unseal-luks
  h mig-b2-unseal-a /blobs/a-for-b.blob teectl unseal
  r mig-b2-boot-done "" teectl boot-done
  ;;
mig-b3)
  # Board B again, with blobs recovered on the host from A's escrow alone.
  mkdir -p /blobs
  tar -xf "$(disk blobs)" -C /blobs
  r mig-b3-unseal-luks-offline /blobs/luks-rec.blob teectl unseal
  r mig-b3-import-luks /blobs/luks-rec.blob teectl rewrap --import-offline
  cp /tmp/out.mig-b3-import-luks /tmp/luks-rec-b.blob
  teectl unseal < /tmp/luks-rec-b.blob | cryptsetup open "$LUKS" data --key-file - 2>/tmp/err.luks
  echo "HAKEYS-RESULT mig-b3-luks-open rc=$? err=$(head -c 300 /tmp/err.luks | tr '\n' ' ')"
  r mig-b3-luks-marker "" sh -c "dd if=/dev/mapper/data bs=22 count=1 2>/dev/null"
  r mig-b3-luks-close "" cryptsetup close data
  h mig-b3-unseal-a /blobs/a-rec.blob teectl unseal
  h mig-b3-unseal-a2 /blobs/a2-rec.blob teectl unseal
  r mig-b3-boot-done "" teectl boot-done
  ;;
xtest)
  for t in ${XTESTS:-1001}; do
    t0=$(now_ms)
    if [ "$t" = all ]; then xtest -t regression > /tmp/xtest.out 2>&1; else xtest $t > /tmp/xtest.out 2>&1; fi
    rc=$?
    echo "HAKEYS-XTEST $t rc=$rc ms=$(( $(now_ms) - t0 )) $(grep -E 'subtests of which|test cases of which' /tmp/xtest.out | tr '\n' ' ')"
    [ $rc = 0 ] || grep -E '^regression_[0-9.]+ FAILED|FAILED' /tmp/xtest.out | head -60 | sed 's/^/HAKEYS: xtest | /'
  done
  ;;
data-*)
  # One boot of `cargo xtask qemu-data` (see data.sh).
  hakeys-data "$STEP"
  ;;
powercut)
  # One boot of `cargo xtask qemu-powercut` (see powercut.sh).
  hakeys-powercut
  ;;
*)
  echo "HAKEYS: unknown step $STEP"
  ;;
esac
