#!/usr/bin/env python3
"""A client for the hakeys daemon (teed), Python standard library only.

Protocol: docs/daemon.md. One JSON object per line each way, "v": 1.

As a library:

    from hakeys_client import Teed
    with Teed() as d:                       # $HAKEYS_SOCKET or /run/hakeys/teed.sock
        password = d.unseal(blob_text)       # bytes
        blob = d.seal("addon/mosquitto", b"s3cret")

From a shell (exit codes as teectl's: 0 ok, 2 bad input, 3 not initialised,
4 refused, 5 rejected blob, 6 storage, 7 unavailable or rate limited):

    hakeys_client.py status
    hakeys_client.py pubkey > board.pem
    printf %s "$PW" | hakeys_client.py seal addon/mosquitto > pw.blob
    hakeys_client.py unseal [NAMESPACE] < pw.blob
    echo '{"v":1,"op":"status"}' | hakeys_client.py raw    # one line in, one out
"""

import base64
import json
import os
import socket
import sys
import time

DEFAULT_SOCKET = "/run/hakeys/teed.sock"
MAX_LINE = 16 * 1024

EXIT_CODES = {
    "invalid_namespace": 2, "too_large": 2, "invalid_argument": 2,
    "not_initialised": 3,
    "denied": 4, "boot_locked": 4, "epoch_retired": 4, "namespace_mismatch": 4,
    "blob_rejected": 5,
    "storage_failure": 6, "storage_corrupt": 6,
    "busy": 7, "retry": 7, "rate_limited": 7, "timeout": 7,
}
RETRYABLE = {"retry", "busy"}


class TeedError(Exception):
    """The daemon answered with an error status."""

    def __init__(self, status, message, retry_after_ms=None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after_ms = retry_after_ms

    @property
    def exit_code(self):
        return EXIT_CODES.get(self.status, 1)


class Teed:
    """One connection to the daemon; any number of requests, one at a time."""

    def __init__(self, path=None, timeout=30.0):
        self.path = path or os.environ.get("HAKEYS_SOCKET") or DEFAULT_SOCKET
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(self.path)
        self.file = self.sock.makefile("rb")

    def close(self):
        self.file.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def raw(self, line):
        """Send one request line (bytes, without newline); return the answer line."""
        self.sock.sendall(line + b"\n")
        answer = self.file.readline(MAX_LINE + 1)
        if not answer.endswith(b"\n"):
            raise ConnectionError("the daemon closed the connection without a full answer")
        return answer

    def call(self, op, retries=3, **fields):
        request = json.dumps({"v": 1, "op": op, **fields}).encode()
        for attempt in range(retries + 1):
            answer = json.loads(self.raw(request))
            status = answer.get("status")
            if status == "ok":
                return answer
            if status in RETRYABLE and attempt < retries:
                time.sleep(answer.get("retry_after_ms", 200) / 1000)
                continue
            raise TeedError(status, answer.get("message", ""), answer.get("retry_after_ms"))

    def status(self):
        return self.call("status")

    def pubkey(self):
        return self.call("pubkey")["pem"]

    def seal(self, namespace, secret):
        return self.call("seal", namespace=namespace,
                         plaintext=base64.b64encode(secret).decode())["blob"]

    def unseal(self, blob, namespace=None):
        fields = {"blob": blob.strip()}
        if namespace is not None:
            fields["namespace"] = namespace
        return base64.b64decode(self.call("unseal", **fields)["plaintext"])


def main(argv):
    args = argv[1:]
    path = None
    if len(args) >= 2 and args[0] == "--socket":
        path, args = args[1], args[2:]
    if not args or args[0] not in ("status", "pubkey", "seal", "unseal", "raw"):
        print(__doc__.strip().split("\n\n")[-1], file=sys.stderr)
        return 2
    op = args[0]
    try:
        with Teed(path) as d:
            if op == "status":
                print(json.dumps(d.status()))
            elif op == "pubkey":
                sys.stdout.write(d.pubkey())
            elif op == "seal":
                if len(args) != 2:
                    print("usage: seal NAMESPACE < secret", file=sys.stderr)
                    return 2
                secret = sys.stdin.buffer.read(4097)
                print(d.seal(args[1], secret))
            elif op == "unseal":
                blob = sys.stdin.read(MAX_LINE)
                namespace = args[1] if len(args) > 1 else None
                sys.stdout.buffer.write(d.unseal(blob, namespace))
            else:
                line = sys.stdin.buffer.readline(MAX_LINE + 1).rstrip(b"\n")
                sys.stdout.buffer.write(d.raw(line))
    except TeedError as e:
        print(f"hakeys_client: {e.message or e.status}", file=sys.stderr)
        return e.exit_code
    except (OSError, ValueError) as e:
        print(f"hakeys_client: daemon unavailable: {e}", file=sys.stderr)
        return 7
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
