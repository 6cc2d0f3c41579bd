#!/usr/bin/env python3
"""Generates known-answer vectors for the RPMB frame MAC.

An independent implementation using only Python's standard hmac/hashlib:
the MAC is HMAC-SHA256 with the 32-byte key over bytes 228..512 of each
512-byte frame, concatenated in order (JEDEC eMMC RPMB).

Frames are filled with deterministic pseudo-random bytes (SHA-256 in counter
mode over a label), including the stuff bytes and the key/MAC field, which
the MAC must ignore. Output (stdout), one vector per line:

    <name> <n_frames> <key hex> <frames hex (n*512 bytes)> <mac hex>

Usage: python3 gen_mac_vectors.py > mac_vectors.txt
"""
import hashlib
import hmac
import sys

FRAME_LEN = 512
MAC_START = 228


def stream(label, n):
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"rpmb-sim-vectors|%s|%d" % (label.encode(), i)).digest()
        i += 1
    return out[:n]


def frame_fields(req, counter, addr, count, result):
    return (counter.to_bytes(4, "big") + addr.to_bytes(2, "big") + count.to_bytes(2, "big")
            + result.to_bytes(2, "big") + req.to_bytes(2, "big"))


def make_frames(name, n, req, counter, addr, result):
    frames = []
    for i in range(n):
        raw = stream("%s/frame%d" % (name, i), 500)  # stuff, key/mac, data, nonce
        frames.append(raw + frame_fields(req, counter, addr, n, result))
    return frames


def mac(key, frames):
    h = hmac.new(key, digestmod=hashlib.sha256)
    for f in frames:
        assert len(f) == FRAME_LEN
        h.update(f[MAC_START:])
    return h.digest()


CASES = [
    # name, frames, request/response type, counter, address, result
    ("write-1", 1, 0x0003, 0, 0, 0),
    ("write-2", 2, 0x0003, 7, 510, 0),
    ("write-16", 16, 0x0003, 0xFFFFFFFE, 100, 0),
    ("read-resp-1", 1, 0x0400, 0, 42, 0),
    ("read-resp-5", 5, 0x0400, 0, 4000, 0x0080),
    ("counter-resp", 1, 0x0200, 123456, 0, 0),
    ("result-resp", 1, 0x0300, 99, 65535, 0x0003),
]


def main():
    lines = []
    for name, n, req, counter, addr, result in CASES:
        key = stream("%s/key" % name, 32)
        frames = make_frames(name, n, req, counter, addr, result)
        lines.append("%s %d %s %s %s" % (name, n, key.hex(), b"".join(frames).hex(),
                                         mac(key, frames).hex()))
    # The all-zero key and all-zero frame, for a quick cross-check by hand.
    zero = bytes(FRAME_LEN)
    lines.append("zero-1 1 %s %s %s" % (bytes(32).hex(), zero.hex(), mac(bytes(32), [zero]).hex()))
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
