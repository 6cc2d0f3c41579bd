# Shell helpers of the guest test scripts (scenario.sh, powercut.sh), sourced
# from /usr/lib/hakeys-test/lib.sh. Each command's result is one line,
#   HAKEYS-RESULT NAME rc=N out=... err=...
# which xtask/src/qemu.rs parses. Test secrets only; real secrets are never
# printed.
disk() { for d in /sys/block/vd*; do [ "$(cat "$d/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }; done; return 1; }
now_ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
# r NAME STDIN CMD...: run, report exit code, stdout (one line) and stderr.
r() {
  name=$1; in=$2; shift 2
  [ -n "$in" ] || in=/dev/null
  "$@" < "$in" > "/tmp/out.$name" 2> "/tmp/err.$name"
  rc=$?
  echo "HAKEYS-RESULT $name rc=$rc out=$(head -c 3000 "/tmp/out.$name" | tr '\n' ' ') err=$(head -c 300 "/tmp/err.$name" | tr '\n' ' ')"
}
# h NAME STDIN CMD...: as r, but reports the SHA-256 of stdout.
h() {
  name=$1; in=$2; shift 2
  "$@" < "$in" > "/tmp/out.$name" 2> "/tmp/err.$name"
  rc=$?
  echo "HAKEYS-RESULT $name rc=$rc sha256=$(sha256sum < "/tmp/out.$name" | cut -d' ' -f1) err=$(head -c 300 "/tmp/err.$name" | tr '\n' ' ')"
}
rpmb_writes() { sed -n 's/^rpmb_write_requests //p' /run/rpmb-stats 2>/dev/null || echo 0; }
rpmb_in() { sed -n 's/^rpmb_frames_in //p' /run/rpmb-stats 2>/dev/null || echo 0; }
rpmb_out() { sed -n 's/^rpmb_frames_out //p' /run/rpmb-stats 2>/dev/null || echo 0; }
rpmb_mark() { m_w=$(rpmb_writes); m_i=$(rpmb_in); m_o=$(rpmb_out); }
rpmb_report() { echo "HAKEYS-RPMB $1 writes=$(( $(rpmb_writes) - ${m_w:-0} )) frames_in=$(( $(rpmb_in) - ${m_i:-0} )) frames_out=$(( $(rpmb_out) - ${m_o:-0} ))"; }
# c NAME STDIN CMD...: as r, and report the RPMB traffic the command caused.
c() {
  rpmb_mark
  r "$@"
  rpmb_report "$1"
}
# f NAME FILE: hand a small file to the host, hex-encoded on one line
#   HAKEYS-FILE NAME <hex>
f() { echo "HAKEYS-FILE $1 $(od -An -v -tx1 "$2" | tr -d ' \n')"; }
