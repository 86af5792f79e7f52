"""ULID ids (time-ordered, 26 chars, Crockford base32) and UTC timestamps."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last = (0, 0)


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def new_id() -> str:
    """A new ULID; monotonic within this process even inside one millisecond."""
    global _last
    with _lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _last
        if ms <= last_ms:
            ms, rand = last_ms, last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # leave room to increment
        _last = (ms, rand)
    return _encode(ms, 10) + _encode(rand, 16)


def id_at(epoch_s: float) -> str:
    """A ULID for something made at `epoch_s` (e.g. a file's mtime), so it sorts where it belongs."""
    ms = max(int(epoch_s * 1000), 0)
    return _encode(ms, 10) + _encode(int.from_bytes(os.urandom(10), "big"), 16)


def iso_at(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="milliseconds")


def is_id(text: str) -> bool:
    return len(text) == 26 and all(c in _ALPHABET for c in text.upper())


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
