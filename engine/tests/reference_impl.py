#!/usr/bin/env python3
"""Independent implementation of the hakeys v1 formats (engine/SPEC.md),
written from the spec with Python's `cryptography` (OpenSSL), used to check
the Rust engine's golden fixtures. Usage:

  reference_impl.py open-device ROOT_KEY_HEX BLOB_HEX      -> plaintext hex
  reference_impl.py open-to-device DEVICE_SK_HEX BLOB_HEX  -> plaintext hex
  reference_impl.py seal-to-device DEVICE_PUB_HEX NS PLAINTEXT_HEX -> blob hex
  reference_impl.py verify-evidence DEVICE_PUB_HEX CHALLENGE_HEX EVIDENCE_HEX -> "version epoch min_epoch"
  reference_impl.py read-slot SLOT_HEX                      -> "seq epoch min_epoch" (fails if invalid)
  reference_impl.py marker DEVICE_SK_HEX                    -> marker hex
"""
import hashlib
import os
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import serialization

INFO_DEVICE = b"hakeys/v1/blob/device\0"
INFO_TO_DEVICE = b"hakeys/v1/blob/to-device\0"


def hkdf44(salt, ikm, info):
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=salt, info=info).derive(ikm)
    return okm[:32], okm[32:]


def parse(blob):
    assert blob[:4] == b"HKSB" and blob[4] == 1, "not a v1 blob"
    kind, ns_len = blob[5], blob[6]
    ns = blob[7:7 + ns_len]
    pos = 7 + ns_len
    (epoch,) = struct.unpack(">I", blob[pos:pos + 4])
    salt = blob[pos + 4:pos + 20]
    pos += 20
    eph = None
    if kind == 2:
        eph = blob[pos:pos + 65]
        pos += 65
    return kind, ns, epoch, salt, eph, blob[:pos], blob[pos:]


def pub_bytes(pk):
    return pk.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def open_device(root, blob):
    kind, ns, epoch, salt, _, aad, body = parse(blob)
    assert kind == 1
    key, nonce = hkdf44(salt, root, INFO_DEVICE + struct.pack(">I", epoch) + bytes([len(ns)]) + ns)
    return AESGCM(key).decrypt(nonce, body, aad)


def open_to_device(sk_int, blob):
    kind, ns, epoch, salt, eph, aad, body = parse(blob)
    assert kind == 2 and epoch == 0
    sk = ec.derive_private_key(sk_int, ec.SECP256R1())
    eph_pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), eph)
    shared = sk.exchange(ec.ECDH(), eph_pk)
    info = INFO_TO_DEVICE + eph + pub_bytes(sk.public_key()) + bytes([len(ns)]) + ns
    key, nonce = hkdf44(salt, shared, info)
    return AESGCM(key).decrypt(nonce, body, aad)


def seal_to_device(dev_pub, ns, pt):
    dev = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), dev_pub)
    eph_sk = ec.generate_private_key(ec.SECP256R1())
    eph = pub_bytes(eph_sk.public_key())
    salt = os.urandom(16)
    shared = eph_sk.exchange(ec.ECDH(), dev)
    header = b"HKSB" + bytes([1, 2, len(ns)]) + ns + struct.pack(">I", 0) + salt + eph
    key, nonce = hkdf44(salt, shared, INFO_TO_DEVICE + eph + pub_bytes(dev) + bytes([len(ns)]) + ns)
    return header + AESGCM(key).encrypt(nonce, pt, header)


def verify_evidence(dev_pub, challenge, ev):
    signed, sig = ev[:-64], ev[-64:]
    assert signed[:4] == b"HKAT" and signed[4] == 1
    clen = signed[5]
    assert signed[6:6 + clen] == challenge, "challenge mismatch"
    assert len(signed) == 6 + clen + 12
    version, epoch, min_epoch = struct.unpack(">III", signed[6 + clen:])
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), dev_pub)
    pk.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
    return version, epoch, min_epoch


def read_slot(rec):
    """A slot record (engine/SPEC.md, "Slot record"): seq and epochs."""
    assert len(rec) == 118, "length"
    assert rec[:4] == b"HKSL" and rec[4] == 2, "magic or version"
    assert hashlib.sha256(rec[:86]).digest() == rec[86:], "checksum"
    (seq,) = struct.unpack(">Q", rec[5:13])
    state = rec[13:86]
    assert state[0] == 1, "state version"
    d = int.from_bytes(state[33:65], "big")
    ec.derive_private_key(d, ec.SECP256R1())  # refuses 0 and values >= n
    epoch, min_epoch = struct.unpack(">II", state[65:73])
    assert 1 <= min_epoch <= epoch, "epochs"
    return seq, epoch, min_epoch


def marker(sk_int):
    """The initialisation marker for a device key."""
    pub = ec.derive_private_key(sk_int, ec.SECP256R1()).public_key()
    return b"HKIN\x01" + hashlib.sha256(pub_bytes(pub)).digest()


def main(argv):
    cmd, args = argv[1], argv[2:]
    x = bytes.fromhex
    if cmd == "open-device":
        print(open_device(x(args[0]), x(args[1])).hex())
    elif cmd == "open-to-device":
        print(open_to_device(int(args[0], 16), x(args[1])).hex())
    elif cmd == "seal-to-device":
        print(seal_to_device(x(args[0]), args[1].encode(), x(args[2])).hex())
    elif cmd == "verify-evidence":
        print("%d %d %d" % verify_evidence(x(args[0]), x(args[1]), x(args[2])))
    elif cmd == "read-slot":
        print("%d %d %d" % read_slot(x(args[0])))
    elif cmd == "marker":
        print(marker(int(args[0], 16)).hex())
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
