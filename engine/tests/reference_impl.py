#!/usr/bin/env python3
"""Independent implementation of the hakeys v1 formats (engine/SPEC.md),
written from the spec with Python's `cryptography` (OpenSSL), used to check
the Rust engine's golden fixtures. Usage:

  reference_impl.py open-device ROOT_KEY_HEX BLOB_HEX      -> plaintext hex
  reference_impl.py open-to-device DEVICE_SK_HEX BLOB_HEX  -> plaintext hex
  reference_impl.py seal-to-device DEVICE_PUB_HEX NS PLAINTEXT_HEX [GENERATION] -> blob hex
  reference_impl.py verify-evidence PUB_HEX CHALLENGE_HEX EVIDENCE_HEX
      -> "1 engine_version epoch min_epoch" (version 1, PUB = device key) or
         "2 engine_version epoch min_epoch boot_ended unmarked_retired ta_version backend sealing_key_hex"
         (version 2, PUB = attestation key)
  reference_impl.py attestation-key ROOT_KEY_HEX           -> attestation public key hex
  reference_impl.py read-slot SLOT_HEX                      -> "seq epoch min_epoch recovery_fp_hex|- unmarked-retired|-" (fails if invalid)
  reference_impl.py marker DEVICE_SK_HEX                    -> marker hex
  reference_impl.py open-escrow-hex RECOVERY_SK_HEX ESCROW_HEX -> "epoch min_epoch root_hex device_sk_hex"
  reference_impl.py open-escrow KEY_FILE ESCROW_FILE        -> "epoch min_epoch device_pub_hex"
  reference_impl.py recover KEY_FILE ESCROW_FILE BLOB_FILE  -> plaintext hex (exit 4 if retired in the escrow)
  reference_impl.py recovery-code KEY_FILE                  -> the recovery code of a key
  reference_impl.py fingerprint PUBKEY_PEM_FILE             -> recovery key fingerprint hex

KEY_FILE is a PKCS#8 or SEC1 PEM private key, or a recovery code; ESCROW_FILE
and BLOB_FILE hold the text forms (hakeys-escrow:v1:..., hakeys:v1:...).
"""
import base64
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
INFO_ESCROW = b"hakeys/v1/escrow\0"
INFO_ATTESTATION_KEY = b"hakeys/v1/attestation-key\0"
CODE_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
CODE_TAG = b"hakeys/v1/recovery-code\0"
N_P256 = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


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
    # Any generation (the epoch field; 0 is unmarked): it is authenticated
    # as part of the header, the key does not depend on it.
    kind, ns, epoch, salt, eph, aad, body = parse(blob)
    assert kind == 2
    sk = ec.derive_private_key(sk_int, ec.SECP256R1())
    eph_pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), eph)
    shared = sk.exchange(ec.ECDH(), eph_pk)
    info = INFO_TO_DEVICE + eph + pub_bytes(sk.public_key()) + bytes([len(ns)]) + ns
    key, nonce = hkdf44(salt, shared, info)
    return AESGCM(key).decrypt(nonce, body, aad)


def seal_to_device(dev_pub, ns, pt, epoch=0):
    dev = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), dev_pub)
    eph_sk = ec.generate_private_key(ec.SECP256R1())
    eph = pub_bytes(eph_sk.public_key())
    salt = os.urandom(16)
    shared = eph_sk.exchange(ec.ECDH(), dev)
    header = b"HKSB" + bytes([1, 2, len(ns)]) + ns + struct.pack(">I", epoch) + salt + eph
    key, nonce = hkdf44(salt, shared, INFO_TO_DEVICE + eph + pub_bytes(dev) + bytes([len(ns)]) + ns)
    return header + AESGCM(key).encrypt(nonce, pt, header)


def verify_evidence(pub, challenge, ev):
    """Evidence (engine/SPEC.md §3), version 1 or 2, against the key the
    verifier trusts: the claims as a tuple starting with the version."""
    signed, sig = ev[:-64], ev[-64:]
    assert signed[:4] == b"HKAT" and signed[4] in (1, 2), "not evidence of a known version"
    clen = signed[5]
    assert signed[6:6 + clen] == challenge, "challenge mismatch"
    claims = signed[6 + clen:]
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
    pk.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
    if signed[4] == 1:
        assert len(claims) == 12
        return (1,) + struct.unpack(">III", claims)
    assert len(claims) == 12 + 1 + 4 + 1 + 65
    version, epoch, min_epoch, flags, ta_version, backend = struct.unpack(">IIIBIB", claims[:18])
    assert flags & ~3 == 0 and backend in (0, 1, 2)
    return (2, version, epoch, min_epoch, flags & 1, (flags >> 1) & 1, ta_version, backend,
            claims[18:].hex())


def attestation_key(root):
    """The attestation key derived from a root key (engine/SPEC.md §3.1)."""
    for counter in range(8):
        okm = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=INFO_ATTESTATION_KEY + bytes([counter])).derive(root)
        d = int.from_bytes(okm, "big")
        if 1 <= d < N_P256:
            return ec.derive_private_key(d, ec.SECP256R1())
    raise AssertionError("no scalar")


def read_slot(rec):
    """A slot record (engine/SPEC.md, "Slot record"), format 2, 3 or 4: seq,
    epochs, the recovery key's fingerprint (None in format 2 or if none)
    and whether unmarked offline blobs are retired (format 4's flag)."""
    assert len(rec) == 118, "length"
    assert rec[:4] == b"HKSL" and rec[4] in (2, 3, 4), "magic or version"
    retired = False
    if rec[4] == 2:
        assert hashlib.sha256(rec[:86]).digest() == rec[86:], "checksum"
        fp = None
    elif rec[4] == 3:
        assert hashlib.sha256(rec[:102]).digest()[:16] == rec[102:], "checksum"
        fp = rec[86:102] if rec[86:102] != bytes(16) else None
    else:
        assert hashlib.sha256(rec[:106]).digest()[:12] == rec[106:], "checksum"
        fp = rec[86:102] if rec[86:102] != bytes(16) else None
        flags = rec[102]
        assert flags & ~1 == 0 and rec[103:106] == bytes(3), "flags and reserved bytes"
        retired = bool(flags & 1)
    (seq,) = struct.unpack(">Q", rec[5:13])
    state = rec[13:86]
    assert state[0] == 1, "state version"
    d = int.from_bytes(state[33:65], "big")
    ec.derive_private_key(d, ec.SECP256R1())  # refuses 0 and values >= n
    epoch, min_epoch = struct.unpack(">II", state[65:73])
    assert 1 <= min_epoch <= epoch, "epochs"
    return seq, epoch, min_epoch, fp, retired


def point(b):
    assert len(b) == 65 and b[0] == 4, "not an uncompressed point"
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b)


def open_escrow(rsk, escrow):
    """Open an escrow (engine/SPEC.md, "Recovery escrow") with the recovery
    private key: (root_key, device_sk_int, epoch, min_epoch)."""
    assert len(escrow) >= 5 and escrow[:4] == b"HKES", "not an escrow"
    assert escrow[4] == 1, "escrow version"
    assert len(escrow) == 304, "escrow length"
    dev, rec, eph, salt = escrow[5:70], escrow[70:135], escrow[135:200], escrow[200:216]
    for p in (dev, rec, eph):
        point(p)
    assert rec == pub_bytes(rsk.public_key()), "the escrow is for another recovery key"
    shared = rsk.exchange(ec.ECDH(), point(eph))
    key, nonce = hkdf44(salt, shared, INFO_ESCROW + eph + rec + dev)
    payload = AESGCM(key).decrypt(nonce, escrow[216:], escrow[:216])
    root, dsk = payload[:32], int.from_bytes(payload[32:64], "big")
    epoch, min_epoch = struct.unpack(">II", payload[64:72])
    assert 1 <= min_epoch <= epoch, "epochs"
    assert pub_bytes(ec.derive_private_key(dsk, ec.SECP256R1()).public_key()) == dev, "device key"
    return root, dsk, epoch, min_epoch


class Retired(Exception):
    pass


def recover(rsk, escrow, blob):
    """Open a blob of the escrowed device, applying the escrow's floor."""
    root, dsk, _, min_epoch = open_escrow(rsk, escrow)
    kind, _, epoch, _, _, _, _ = parse(blob)
    # A device blob's epoch, an offline blob's generation (0: unmarked,
    # which the escrow cannot refuse: it does not record the board's flag).
    if (kind == 1 or epoch != 0) and epoch < min_epoch:
        raise Retired()
    if kind == 1:
        return open_device(root, blob)
    return open_to_device(dsk, blob)


def code_from_scalar(d):
    """The recovery code (engine/SPEC.md, "Recovery code") of scalar d."""
    raw = d.to_bytes(32, "big")
    data = raw + hashlib.sha256(CODE_TAG + raw).digest()[:3]
    n = int.from_bytes(data, "big")
    chars = [CODE_ALPHABET[(n >> (5 * (55 - i))) & 31] for i in range(56)]
    return "-".join("".join(chars[i:i + 7]) for i in range(0, 56, 7))


def scalar_from_code(text):
    sym = []
    for c in text.lower():
        if c in " \t\r\n-":
            continue
        c = {"o": "0", "i": "1", "l": "1"}.get(c, c)
        assert c in CODE_ALPHABET, "not a recovery code character"
        sym.append(CODE_ALPHABET.index(c))
    assert len(sym) == 56, "a recovery code has 56 characters"
    n = 0
    for v in sym:
        n = (n << 5) | v
    data = n.to_bytes(35, "big")
    raw, check = data[:32], data[32:]
    assert hashlib.sha256(CODE_TAG + raw).digest()[:3] == check, "checksum"
    d = int.from_bytes(raw, "big")
    assert 1 <= d < N_P256, "scalar out of range"
    return d


def load_key(path):
    data = open(path, "rb").read()
    if data.lstrip().startswith(b"-----BEGIN"):
        return serialization.load_pem_private_key(data, password=None)
    return ec.derive_private_key(scalar_from_code(data.decode()), ec.SECP256R1())


def read_text(path, prefix):
    text = open(path).read().strip()
    assert text.startswith(prefix), "expected " + prefix
    return base64.b64decode(text[len(prefix):], validate=True)


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
        epoch = int(args[3]) if len(args) > 3 else 0
        print(seal_to_device(x(args[0]), args[1].encode(), x(args[2]), epoch).hex())
    elif cmd == "verify-evidence":
        print(" ".join(str(c) for c in verify_evidence(x(args[0]), x(args[1]), x(args[2]))))
    elif cmd == "attestation-key":
        print(pub_bytes(attestation_key(x(args[0])).public_key()).hex())
    elif cmd == "read-slot":
        seq, epoch, min_epoch, fp, retired = read_slot(x(args[0]))
        print("%d %d %d %s %s" % (seq, epoch, min_epoch, fp.hex() if fp else "-",
                                  "unmarked-retired" if retired else "-"))
    elif cmd == "open-escrow-hex":
        rsk = ec.derive_private_key(int(args[0], 16), ec.SECP256R1())
        root, dsk, epoch, min_epoch = open_escrow(rsk, x(args[1]))
        print("%d %d %s %064x" % (epoch, min_epoch, root.hex(), dsk))
    elif cmd == "open-escrow":
        escrow = read_text(args[1], "hakeys-escrow:v1:")
        _, dsk, epoch, min_epoch = open_escrow(load_key(args[0]), escrow)
        dev = pub_bytes(ec.derive_private_key(dsk, ec.SECP256R1()).public_key())
        print("%d %d %s" % (epoch, min_epoch, dev.hex()))
    elif cmd == "recover":
        escrow = read_text(args[1], "hakeys-escrow:v1:")
        blob = read_text(args[2], "hakeys:v1:")
        try:
            print(recover(load_key(args[0]), escrow, blob).hex())
        except Retired:
            sys.exit(4)
    elif cmd == "recovery-code":
        print(code_from_scalar(load_key(args[0]).private_numbers().private_value))
    elif cmd == "fingerprint":
        pk = serialization.load_pem_public_key(open(args[0], "rb").read())
        print(hashlib.sha256(pub_bytes(pk)).digest()[:16].hex())
    elif cmd == "marker":
        print(marker(int(args[0], 16)).hex())
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
