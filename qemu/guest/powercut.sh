#!/bin/sh
# One boot of `cargo xtask qemu-powercut` (xtask/src/powercut.rs), which
# starts each boot as a new QEMU process and judges the HAKEYS-RESULT lines.
# In order:
#   1. setup (PC_SETUP, optional): load = only load the TA (a blank RPMB gets
#      formatted); init1 = init + seal setup-a; init2 = init1 + rotate + seal
#      setup-b; v1 = init2 with the previous release's TA (format v1 state);
#   2. checks, always: status, pubkey, and every blob on the blobs disk;
#   3. finish (PC_FINISH=init): `teectl init`, as a user would after a cut;
#   4. the operation (PC_OP: init, rotate, retire, new-identity; none = stop
#      here): seal a blob (plaintext pc-$PC_TAG) if initialised, then
#      restart the supplicant with the power cut armed (PC_CUT=N:before|after;
#      absent = no cut, the run counts the operation's RPMB writes) and run
#      the operation. A cut powers the machine off in the middle of it.
. /usr/lib/hakeys-test/lib.sh

TA_V1=/usr/lib/hakeys-test/ta-v1

# Replace the running supplicant (idle: no request in flight between
# commands) by one with these options; its write count starts at 0.
supplicant_restart() {
  pid=$(cat /run/supplicant.pid 2>/dev/null)
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null
    # Gone, or a zombie (its files, /dev/teepriv0 and the image lock, are closed).
    i=0
    while [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && [ $i -lt 200 ]; do
      sleep 0.05; i=$((i+1))
    done
  fi
  : > /run/supplicant2.log
  rm -f /run/rpmb-stats
  hakeys-supplicant --rpmb-serial rpmb --stats /run/rpmb-stats "$@" 2>>/run/supplicant2.log &
  echo $! > /run/supplicant.pid
  i=0; while ! grep -q serving /run/supplicant2.log && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
  sed 's/^/HAKEYS: supplicant | /' /run/supplicant2.log
}
json_num() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$2"; }

case "$PC_SETUP" in
v1)
  if [ ! -e "$TA_V1/313c2bc6-6adc-4eb7-892e-1a75e61b45df.ta" ]; then
    echo "HAKEYS: no previous-release TA in the image"
  fi
  supplicant_restart --ta-dir "$TA_V1"
  ;;
esac
case "$PC_SETUP" in
load)
  r setup-status "" teectl status --json
  ;;
init1|init2|v1)
  r setup-init "" teectl init
  printf 'setup-a' > /tmp/setup-a; r setup-a /tmp/setup-a teectl seal --namespace ha/core
  if [ "$PC_SETUP" != init1 ]; then
    r setup-rotate "" teectl rotate
    printf 'setup-b' > /tmp/setup-b; r setup-b /tmp/setup-b teectl seal --namespace ha/core
  fi
  ;;
esac

r check-status "" teectl status --json
r check-pubkey "" teectl pubkey
mkdir -p /blobs
tar -xf "$(disk blobs)" -C /blobs 2>/dev/null
for f in /blobs/*.blob; do
  [ -e "$f" ] || continue
  b=${f##*/}
  h "unseal-${b%.blob}" "$f" teectl unseal
done

if [ "$PC_FINISH" = init ]; then
  r finish-init "" teectl init
  r finish-pubkey "" teectl pubkey
fi

OP=${PC_OP:-none}
[ "$OP" = none ] && exit 0
if [ "$OP" = new-identity ] && ! teectl init --help 2>&1 | grep -q -- --new-identity; then
  echo "HAKEYS: UNSUPPORTED teectl has no init --new-identity"
  exit 0
fi
[ "$OP" = retire ] && r prep-rotate "" teectl rotate
if grep -q '"initialised":true' /tmp/out.check-status; then
  printf 'pc-%s' "$PC_TAG" > /tmp/pre; r seal-pre /tmp/pre teectl seal --namespace ha/core
fi
r pre-status "" teectl status --json
r pre-pubkey "" teectl pubkey
case "$OP" in
init) set -- teectl init ;;
rotate) set -- teectl rotate ;;
retire) set -- teectl retire --below "$(json_num epoch /tmp/out.pre-status)" ;;
new-identity) set -- teectl init --new-identity --yes-destroy-every-sealed-secret ;;
*) echo "HAKEYS: unknown operation $OP"; exit 0 ;;
esac
if [ -n "$PC_CUT" ]; then
  supplicant_restart --ta-dir /lib/optee_armtz --cut-at-write "${PC_CUT%%:*}" --cut-mode "${PC_CUT#*:}"
else
  supplicant_restart --ta-dir /lib/optee_armtz
fi
echo "HAKEYS: ARMED op=$OP cut=${PC_CUT:-none} uptime $(cut -d' ' -f1 /proc/uptime)"
# With a cut armed, the machine powers off inside this command.
c op "" "$@"
r post-status "" teectl status --json
r post-pubkey "" teectl pubkey
