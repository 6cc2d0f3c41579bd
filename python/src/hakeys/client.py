"""The daemon's protocol, version 1 (docs/daemon.md): one JSON object per
line each way over a Unix stream socket."""

import base64
import binascii
import json
import os
import re
import socket
import time

DEFAULT_SOCKET = "/run/hakeys/teed.sock"
#: Where containers on a Home Assistant OS board reach the socket (a tmpfs
#: under the host's /dev, which the Supervisor binds into every container).
CONTAINER_SOCKET = "/dev/hakeys/teed.sock"
SOCKET_ENV = "HAKEYS_SOCKET"
#: The longest line either side sends, with its newline.
MAX_LINE = 16 * 1024
#: The text form of a sealed blob starts with this.
BLOB_PREFIX = "hakeys:v1:"
_BLOB_RE = re.compile(r"\Ahakeys:v1:[A-Za-z0-9+/]+={0,2}\Z")

#: teectl's exit code for each status (docs/daemon.md, "Status names").
EXIT_CODES = {
    "bad_message": 1, "unsupported_version": 1, "unknown_opcode": 1, "internal": 1,
    "invalid_namespace": 2, "too_large": 2, "invalid_argument": 2,
    "not_initialised": 3,
    "denied": 4, "boot_locked": 4, "epoch_retired": 4, "namespace_mismatch": 4,
    "blob_rejected": 5,
    "storage_failure": 6, "storage_corrupt": 6,
    "busy": 7, "retry": 7, "rate_limited": 7, "timeout": 7,
}
#: Statuses that mean "the engine is reconnecting": worth another try.
RETRYABLE = frozenset({"retry", "busy"})


class TeedError(Exception):
    """The daemon answered with an error status (never carries a secret)."""

    def __init__(self, status, message="", retry_after_ms=None):
        super().__init__(f"{status}: {message}" if message else status)
        self.status = status
        self.message = message
        self.retry_after_ms = retry_after_ms

    @property
    def exit_code(self):
        return EXIT_CODES.get(self.status, 1)


class ProtocolError(ConnectionError):
    """The daemon's answer does not follow the protocol."""


def is_blob(value):
    """Whether `value` (str) is the one-line text form of a sealed blob."""
    return isinstance(value, str) and bool(_BLOB_RE.match(value.strip()))


def socket_path(path=None):
    """`path`, else $HAKEYS_SOCKET, else the first of /run/hakeys/teed.sock
    (the host) and /dev/hakeys/teed.sock (a container) that exists."""
    if path or os.environ.get(SOCKET_ENV):
        return path or os.environ.get(SOCKET_ENV)
    for candidate in (DEFAULT_SOCKET, CONTAINER_SOCKET):
        if os.path.exists(candidate):
            return candidate
    return DEFAULT_SOCKET


class Teed:
    """One connection to the daemon; any number of requests, one at a time."""

    def __init__(self, path=None, timeout=30.0):
        self.path = socket_path(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(self.path)
        except BaseException:
            self.sock.close()
            raise
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
        if b"\n" in line:
            raise ValueError("a request is one line")
        self.sock.sendall(line + b"\n")
        answer = self.file.readline(MAX_LINE + 1)
        if not answer.endswith(b"\n"):
            raise ProtocolError("the daemon closed the connection without a full answer")
        return answer

    def call(self, op, retries=3, **fields):
        """One request; the answer object when its status is ok, else TeedError.
        `retry` and `busy` are retried (the engine reconnecting)."""
        request = json.dumps({"v": 1, "op": op, **fields}, separators=(",", ":")).encode()
        for attempt in range(retries + 1):
            try:
                answer = json.loads(self.raw(request))
            except ValueError as e:
                raise ProtocolError(f"the answer is not JSON: {e}") from None
            if not isinstance(answer, dict) or answer.get("v") != 1:
                raise ProtocolError("the answer is not a protocol v1 object")
            status = answer.get("status")
            if status == "ok":
                return answer
            if status in RETRYABLE and attempt < retries:
                time.sleep(min(max(answer.get("retry_after_ms") or 200, 10), 2000) / 1000)
                continue
            raise TeedError(status, answer.get("message", ""), answer.get("retry_after_ms"))
        raise AssertionError("unreachable")

    def status(self):
        return self.call("status")

    def pubkey(self):
        return self.call("pubkey")["pem"]

    def seal(self, namespace, secret):
        """Seal `secret` (bytes, or str as UTF-8) in `namespace`; the blob's text."""
        if isinstance(secret, str):
            secret = secret.encode()
        return self.call("seal", namespace=namespace,
                         plaintext=base64.b64encode(secret).decode())["blob"]

    def unseal(self, blob, namespace=None):
        """The plaintext (bytes) of a blob's text form; with `namespace`, only
        a blob of that namespace."""
        fields = {"blob": blob.strip()}
        if namespace is not None:
            fields["namespace"] = namespace
        text = self.call("unseal", **fields).get("plaintext")
        try:
            return base64.b64decode(text, validate=True)
        except (TypeError, binascii.Error):
            raise ProtocolError("the plaintext in the answer is not base64") from None

    def unseal_text(self, blob, namespace=None):
        """As unseal(), decoded as UTF-8."""
        return self.unseal(blob, namespace).decode("utf-8")


def resolve(value, namespace=None, path=None):
    """An option value as the add-on should use it: a sealed blob's text is
    opened through the daemon (UTF-8 text; with `namespace`, only a blob of
    that namespace); anything else is returned unchanged."""
    if not is_blob(value):
        return value
    with Teed(path) as d:
        return d.unseal_text(value, namespace)
