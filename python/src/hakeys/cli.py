"""`python -m hakeys` / `hakeys`: the daemon from a shell, with teectl's exit codes."""

import json
import sys

from .client import MAX_LINE, Teed, TeedError

USAGE = """usage: hakeys [--socket PATH] COMMAND
  status                 the engine's state (JSON)
  pubkey                 the device public key (PEM)
  seal NAMESPACE         stdin secret -> blob text
  unseal [NAMESPACE]     stdin blob text -> secret, byte-exact
  raw                    one request line on stdin -> the answer line"""


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    path = None
    if len(args) >= 2 and args[0] == "--socket":
        path, args = args[1], args[2:]
    if not args or args[0] not in ("status", "pubkey", "seal", "unseal", "raw") \
            or (args[0] == "seal" and len(args) != 2) \
            or (args[0] == "unseal" and len(args) > 2) \
            or (args[0] in ("status", "pubkey", "raw") and len(args) != 1):
        print(USAGE, file=sys.stderr)
        return 2
    op = args[0]
    try:
        if op == "seal":
            secret = sys.stdin.buffer.read(4097)
            if not secret:
                print("hakeys: the secret on stdin is empty", file=sys.stderr)
                return 2
        elif op == "unseal":
            blob = sys.stdin.buffer.read(MAX_LINE).decode("ascii", "replace")
        elif op == "raw":
            line = sys.stdin.buffer.readline(MAX_LINE + 1).rstrip(b"\n")
        with Teed(path) as d:
            if op == "status":
                print(json.dumps(d.status()))
            elif op == "pubkey":
                sys.stdout.write(d.pubkey())
            elif op == "seal":
                print(d.seal(args[1], secret))
            elif op == "unseal":
                sys.stdout.buffer.write(d.unseal(blob, args[1] if len(args) > 1 else None))
            else:
                sys.stdout.buffer.write(d.raw(line))
        sys.stdout.flush()
    except TeedError as e:
        print(f"hakeys: {e.message or e.status}", file=sys.stderr)
        return e.exit_code
    except (OSError, ValueError) as e:
        print(f"hakeys: daemon unavailable: {e}", file=sys.stderr)
        return 7
    return 0
