"""hakeys: a client for teed, the hakeys decrypt daemon (standard library only).

    import hakeys
    with hakeys.Teed() as d:            # $HAKEYS_SOCKET, /run/hakeys/ or /dev/hakeys/teed.sock
        password = d.unseal(blob_text)  # bytes

    value = hakeys.resolve(option_value, namespace="addon/my_addon")

Protocol: docs/daemon.md in the hakeys repository (newline-delimited JSON,
version 1).
"""

from .client import (
    BLOB_PREFIX,
    CONTAINER_SOCKET,
    DEFAULT_SOCKET,
    EXIT_CODES,
    MAX_LINE,
    Teed,
    TeedError,
    is_blob,
    resolve,
)

__all__ = [
    "BLOB_PREFIX",
    "CONTAINER_SOCKET",
    "DEFAULT_SOCKET",
    "EXIT_CODES",
    "MAX_LINE",
    "Teed",
    "TeedError",
    "is_blob",
    "resolve",
]
__version__ = "0.1.0"
