"""Unit tests of the hakeys package against a stand-in daemon that speaks
protocol v1 (docs/daemon.md) on a Unix socket. The real daemon is exercised
by tests/tests/daemon.rs, which drives this package as separate users."""

import base64
import json
import os
import socketserver
import subprocess
import sys
import tempfile
import threading
import unittest

import hakeys

BLOB = "hakeys:v1:SEtTQgEBB2hhL2NvcmU="


class FakeTeed(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path):
        self.store = {}
        self.script = []  # answers to give first, in order
        self.requests = []
        super().__init__(path, Handler)


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            req = json.loads(line)
            self.server.requests.append(req)
            if self.server.script:
                answer = self.server.script.pop(0)
            else:
                answer = self.answer(req)
            if isinstance(answer, bytes):
                self.wfile.write(answer)
                return
            self.wfile.write(json.dumps(answer).encode() + b"\n")

    def answer(self, req):
        store = self.server.store
        if req.get("v") != 1:
            return {"v": 1, "status": "unsupported_version", "message": "v"}
        if req["op"] == "status":
            return {"v": 1, "status": "ok", "backend": "sim", "initialised": True,
                    "epoch": 1, "min_epoch": 1, "boot_locked": False,
                    "engine_version": "1.0.0"}
        if req["op"] == "pubkey":
            return {"v": 1, "status": "ok", "pem": "-----BEGIN PUBLIC KEY-----\n"}
        if req["op"] == "seal":
            blob = "hakeys:v1:" + base64.b64encode(
                f"{len(store):04d}".encode()).decode()
            store[blob] = (req["namespace"], req["plaintext"])
            return {"v": 1, "status": "ok", "blob": blob}
        if req["op"] == "unseal":
            ns, pt = store.get(req["blob"], (None, None))
            if ns is None:
                return {"v": 1, "status": "blob_rejected", "message": "the blob was rejected"}
            if req.get("namespace", ns) != ns:
                return {"v": 1, "status": "namespace_mismatch", "message": "other namespace"}
            return {"v": 1, "status": "ok", "namespace": ns, "plaintext": pt}
        return {"v": 1, "status": "unknown_opcode", "message": "no"}


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "teed.sock")
        self.server = FakeTeed(self.path)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
        self.dir.cleanup()

    def test_seal_unseal_round_trip_byte_exact(self):
        secret = b"\x00pw\n\xff\"'\xe2\x80\xa8"
        with hakeys.Teed(self.path) as d:
            blob = d.seal("addon/x", secret)
            self.assertTrue(hakeys.is_blob(blob))
            self.assertEqual(d.unseal(blob), secret)
            self.assertEqual(d.unseal("  " + blob + "\n", "addon/x"), secret)
            with self.assertRaises(hakeys.TeedError) as e:
                d.unseal(blob, "addon/y")
            self.assertEqual((e.exception.status, e.exception.exit_code), ("namespace_mismatch", 4))
        self.assertEqual(self.server.requests[0],
                         {"v": 1, "op": "seal", "namespace": "addon/x",
                          "plaintext": base64.b64encode(secret).decode()})

    def test_errors_carry_status_and_exit_code(self):
        with hakeys.Teed(self.path) as d:
            with self.assertRaises(hakeys.TeedError) as e:
                d.unseal(BLOB)
            self.assertEqual(e.exception.status, "blob_rejected")
            self.assertEqual(e.exception.exit_code, 5)
            self.assertEqual(d.status()["backend"], "sim")

    def test_retry_and_busy_are_retried(self):
        self.server.script = [
            {"v": 1, "status": "retry", "message": "reconnecting", "retry_after_ms": 10},
            {"v": 1, "status": "busy", "message": "busy", "retry_after_ms": 10},
        ]
        with hakeys.Teed(self.path) as d:
            self.assertTrue(d.pubkey().startswith("-----BEGIN"))
        self.assertEqual(len(self.server.requests), 3)

    def test_rate_limited_is_not_retried(self):
        self.server.script = [{"v": 1, "status": "rate_limited", "message": "slow down",
                               "retry_after_ms": 500}]
        with hakeys.Teed(self.path) as d:
            with self.assertRaises(hakeys.TeedError) as e:
                d.status()
        self.assertEqual((e.exception.exit_code, e.exception.retry_after_ms), (7, 500))

    def test_protocol_violations_are_errors(self):
        for bad in [b"not json\n", b'{"v":2,"status":"ok"}\n', b'{"v":1,"status":"ok"', b""]:
            self.server.script = [bad]
            with hakeys.Teed(self.path) as d:
                with self.assertRaises(ConnectionError, msg=bad):
                    d.status()
        self.server.script = [{"v": 1, "status": "ok", "namespace": "a", "plaintext": "!!"}]
        with hakeys.Teed(self.path) as d:
            with self.assertRaises(hakeys.client.ProtocolError):
                d.unseal(BLOB)

    def test_resolve_opens_blobs_and_passes_other_values(self):
        with hakeys.Teed(self.path) as d:
            blob = d.seal("addon/x", "pässword")
        self.assertEqual(hakeys.resolve(blob, "addon/x", path=self.path), "pässword")
        for v in ["plain", 42, None, "hakeys:v1:", "hakeys:v1:a b", " x" + blob]:
            self.assertEqual(hakeys.resolve(v, path=self.path), v)

    def test_default_socket_is_the_first_that_exists(self):
        old = os.environ.pop("HAKEYS_SOCKET", None)
        try:
            want = next((p for p in (hakeys.DEFAULT_SOCKET, hakeys.CONTAINER_SOCKET)
                         if os.path.exists(p)), hakeys.DEFAULT_SOCKET)
            self.assertEqual(hakeys.client.socket_path(), want)
            self.assertEqual(hakeys.client.socket_path("/x.sock"), "/x.sock")
        finally:
            if old is not None:
                os.environ["HAKEYS_SOCKET"] = old

    def test_socket_from_environment(self):
        old = os.environ.get("HAKEYS_SOCKET")
        os.environ["HAKEYS_SOCKET"] = self.path
        try:
            with hakeys.Teed() as d:
                self.assertEqual(d.path, self.path)
        finally:
            if old is None:
                del os.environ["HAKEYS_SOCKET"]
            else:
                os.environ["HAKEYS_SOCKET"] = old

    def cli(self, *args, stdin=b""):
        env = dict(os.environ)
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
        if not os.environ.get("HAKEYS_TEST_INSTALLED"):
            env["PYTHONPATH"] = src
        return subprocess.run([sys.executable, "-m", "hakeys", "--socket", self.path, *args],
                              input=stdin, capture_output=True, env=env, timeout=60)

    def test_command_line(self):
        r = self.cli("seal", "addon/x", stdin=b"s3cret\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        blob = r.stdout
        r = self.cli("unseal", "addon/x", stdin=blob)
        self.assertEqual((r.returncode, r.stdout), (0, b"s3cret\n"))
        r = self.cli("unseal", "addon/other", stdin=blob)
        self.assertEqual((r.returncode, r.stdout), (4, b""))
        self.assertNotIn(b"s3cret", r.stderr)
        r = self.cli("status")
        self.assertEqual(json.loads(r.stdout)["initialised"], True)
        self.assertEqual(self.cli("bogus").returncode, 2)
        self.assertEqual(self.cli("seal").returncode, 2)
        self.assertEqual(self.cli("seal", "addon/x").returncode, 2)  # empty secret
        r = self.cli("raw", stdin=b'{"v":1,"op":"status"}\n')
        self.assertEqual(json.loads(r.stdout)["status"], "ok")

    def test_no_daemon_is_exit_7(self):
        r = subprocess.run([sys.executable, "-m", "hakeys", "--socket",
                            os.path.join(self.dir.name, "none.sock"), "status"],
                           capture_output=True, timeout=60,
                           env={**os.environ, **({} if os.environ.get("HAKEYS_TEST_INSTALLED") else {
                               "PYTHONPATH": os.path.join(os.path.dirname(os.path.dirname(
                                   os.path.abspath(__file__))), "src")})})
        self.assertEqual(r.returncode, 7)


if __name__ == "__main__":
    unittest.main()
