"""Atomic output: write to a temporary file beside the target, then rename.

A failing or interrupted command leaves neither a partial file nor a damaged
existing one.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes | list) -> Path:
    """Write `data` (bytes, or a list of bytes-like pieces written in turn) to `path`, atomically."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    # The name is chosen before the file exists, so that an interrupt arriving at any point after
    # the file is created (even inside the call that creates it) finds the name to remove.
    # tempfile.mkstemp has such a window: SIGTERM right after its open() left the file behind.
    for _ in range(100):
        tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
        if not tmp.exists():
            break
    try:
        # 0o666 less the umask, as any written file; O_EXCL: never reuse an existing file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            for piece in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
