#!/usr/bin/env python3
"""Drives `rpmb-sim serve` over its stdin/stdout with a host side written
independently of the Rust code (Python's struct, hmac and hashlib only).

Usage: serve_client.py RPMB_SIM_BINARY IMAGE   (IMAGE: freshly created)
Prints "serve_client: ok" and exits 0 when every check passes.
"""
import hashlib
import hmac
import os
import struct
import subprocess
import sys

KEY = bytes(range(32))


def frame(req, key_mac=b"", data=b"", nonce=b"", counter=0, addr=0, count=0, result=0):
    f = bytearray(512)
    f[196:228] = key_mac.ljust(32, b"\0")
    f[228:484] = data.ljust(256, b"\0")
    f[484:500] = nonce.ljust(16, b"\0")
    struct.pack_into(">IHHHH", f, 500, counter, addr, count, result, req)
    return f


def fields(f):
    counter, addr, count, result, resp = struct.unpack_from(">IHHHH", f, 500)
    return {"counter": counter, "addr": addr, "count": count, "result": result, "resp": resp}


def mac(frames):
    h = hmac.new(KEY, digestmod=hashlib.sha256)
    for f in frames:
        h.update(bytes(f[228:512]))
    return h.digest()


def check(cond, what):
    if not cond:
        sys.exit("serve_client: FAILED: " + what)


def main():
    binary, image = sys.argv[1], sys.argv[2]
    p = subprocess.Popen([binary, "serve", image], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(frames, nresp):
        p.stdin.write(b"".join(bytes(f) for f in frames))
        p.stdin.flush()
        out = b""
        while len(out) < 512 * nresp:
            chunk = p.stdout.read(512 * nresp - len(out))
            check(chunk, "server closed its output early")
            out += chunk
        return [bytearray(out[i:i + 512]) for i in range(0, len(out), 512)]

    # Counter read before the key is programmed: 0x0007.
    nonce = os.urandom(16)
    [r] = send([frame(0x0002, nonce=nonce)], 1)
    check(fields(r)["result"] == 0x0007 and fields(r)["resp"] == 0x0200, "key not programmed")

    # Program the key.
    [r] = send([frame(0x0001, key_mac=KEY), frame(0x0005)], 1)
    check(fields(r) == {"counter": 0, "addr": 0, "count": 0, "result": 0, "resp": 0x0100},
          "program key response %r" % fields(r))

    # Counter read: nonce echoed, MAC'd.
    nonce = os.urandom(16)
    [r] = send([frame(0x0002, nonce=nonce)], 1)
    check(fields(r)["resp"] == 0x0200 and fields(r)["result"] == 0, "counter response")
    check(r[484:500] == nonce, "counter nonce echoed")
    check(r[196:228] == mac([r]), "counter response MAC")
    counter = fields(r)["counter"]
    check(counter == 0, "counter starts at 0")

    # Write two blocks at 10 (MAC over both frames, carried in the last).
    blocks = [os.urandom(256), os.urandom(256)]
    w = [frame(0x0003, data=b, counter=counter, addr=10, count=2) for b in blocks]
    w[-1][196:228] = mac(w)
    [r] = send(w + [frame(0x0005)], 1)
    f = fields(r)
    check(f["resp"] == 0x0300 and f["result"] == 0, "write response %r" % f)
    check(f["counter"] == 1 and f["addr"] == 10, "write response counter/address %r" % f)
    check(r[196:228] == mac([r]), "write response MAC")

    # Read them back.
    nonce = os.urandom(16)
    rs = send([frame(0x0004, nonce=nonce, addr=10, count=2)], 2)
    for x in rs:
        fx = fields(x)
        check(fx["resp"] == 0x0400 and fx["result"] == 0, "read response %r" % fx)
        check(fx["addr"] == 10 and fx["count"] == 2 and x[484:500] == nonce, "read fields")
    check([bytes(x[228:484]) for x in rs] == blocks, "read data")
    check(rs[-1][196:228] == mac(rs), "read MAC over both frames")

    # Replaying the write: counter failure.
    [r] = send(w + [frame(0x0005)], 1)
    check(fields(r)["result"] == 0x0003, "replay rejected with counter failure")

    # An unknown request type gets one general-failure frame.
    [r] = send([frame(0x0077)], 1)
    check(fields(r)["result"] == 0x0001, "unknown request type")

    p.stdin.close()
    check(p.wait(timeout=30) == 0, "serve exit status")
    print("serve_client: ok")


if __name__ == "__main__":
    main()
