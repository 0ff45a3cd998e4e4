"""Safe output: check an output path before the work starts, then write it atomically.

`check_output` refuses, before any long work, an output that would destroy something the user
has: a path that is the same file as one of the command's inputs (by identity, not spelling), a
directory, a device, FIFO or socket, a missing or read-only folder, a name too long to write.
`atomic_write` writes to a temporary file beside the target and renames it into place, so a
failing or interrupted command leaves neither a partial file nor a damaged existing one; it
removes the temporary files that killed writers of the same target left behind.
"""
from __future__ import annotations

import os
import re
import secrets
import stat
import time
from pathlib import Path

from .errors import FileError, UsageError, elide

NAME_MAX = 255  # bytes in a file name, on every common file system
TMP_EXTRA = len("..00000000.tmp")  # what the temporary name adds to the target's
STALE_SECONDS = 60  # an unlocked temporary file at least this old belongs to a writer that died


def check_output(path, inputs=(), flag: str = "-o") -> Path:
    """The output path, once it is safe to write there; raises UsageError (exit 2) otherwise.
    `inputs`: the files the command reads (None entries are skipped)."""
    path = Path(path)
    shown = elide(str(path))
    if path.is_dir():
        raise UsageError(f"{shown} is a directory; give a file name with {flag}")
    if path.exists() and not path.is_file():
        raise UsageError(f"{shown} is not a regular file (a device, FIFO or socket): almc writes only regular "
                         f"files; give another name with {flag}")
    if len(os.fsencode(path.name)) + TMP_EXTRA > NAME_MAX:
        raise UsageError(f"the file name of {shown} is too long ({len(os.fsencode(path.name))} bytes; the file "
                         f"system takes {NAME_MAX} and almc's temporary name adds {TMP_EXTRA})")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"the folder {elide(str(folder))} does not exist" if not folder.exists()
                         else f"{elide(str(folder))} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write in the folder {elide(str(folder))} (permission denied)")
    _probe(folder)
    if path.exists():
        for src in inputs:
            if src is not None and os.path.exists(src) and os.path.samefile(path, src):
                rel = os.path.relpath(src)
                rel = rel if not rel.startswith("..") else str(src)
                same = "" if os.path.abspath(src) == os.path.abspath(path) else f" ({elide(rel)})"
                raise UsageError(f"the output {shown} is an input of this command{same}: writing it would destroy "
                                 f"it; give another name with {flag}")
    return path


def _probe(folder: Path) -> None:
    """Create and remove a file in `folder`: some folders refuse what their permissions allow
    (/proc, a read-only mount), and a long run must not learn that at its end."""
    probe = folder / f".almc-probe.{secrets.token_hex(4)}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise UsageError(f"cannot write in the folder {elide(str(folder))} ({e.strerror or e})") from None
    finally:  # also when an interrupt lands between the create and the remove
        try:
            os.unlink(probe)
        except OSError:
            pass


def check_input_file(path) -> Path:
    """A file almc reads: it must be a regular file (a FIFO would block the read forever, a
    device never end it)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise FileError(elide(str(path)), "is a directory, not a file" if path.is_dir()
                        else "is not a regular file (a FIFO, device or socket)")
    return path


def check_output_folder(path, flag: str) -> Path:
    """A folder almc will write into later (--checkpoint DIR): an existing writable folder, or a
    new one whose nearest existing parent is a writable folder."""
    path = Path(path)
    shown = elide(str(path))
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {shown} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write in the folder {shown} (permission denied)")
        _probe(path)
        return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create the folder {shown}: {elide(str(parent))} is not a writable folder")
    return path


def atomic_write(path: str | os.PathLike, data: bytes | list, mode: int | None = None) -> Path:
    """Write `data` (bytes, or a list of bytes-like pieces written in turn) to `path`, atomically.
    Only a regular file or a new path is written; OS errors become FileError (exit 1).
    `mode`: the permissions the file gets (a rewritten source keeps its own)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists() and not path.is_file():
        raise FileError(path, "is not a regular file (a directory, device, FIFO or socket); nothing was written")
    _sweep_stale(folder, path.name)
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
            _lock(f.fileno())  # held while writing: a sweeper leaves a live writer's file alone
            for piece in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise FileError(elide(str(path)), f"cannot write it: {e.strerror or e}; nothing was written") from None
        raise
    return path


def _lock(fd: int, blocking: bool = True) -> bool:
    try:
        import fcntl
    except ImportError:  # no advisory locks here: the sweep then goes by age alone
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def _sweep_stale(folder: Path, name: str) -> None:
    """Remove `.NAME.xxxxxxxx.tmp` files in `folder` that no writer holds: a compile killed by
    SIGKILL leaves its temporary file, which nothing else would ever remove."""
    pattern = re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{8}}\.tmp")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    now = time.time()
    for e in entries:
        if not pattern.fullmatch(e.name):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_SECONDS:
                continue
            fd = os.open(e.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd, blocking=False):
                os.unlink(e.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def read_array(path: str):
    """A .npy array, its header checked against the file's size before anything is allocated."""
    import numpy as np

    p = Path(path)
    if not p.exists():
        raise UsageError(f"no such file: {path}")
    if not p.is_file():
        raise FileError(path, "not a regular file")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
            if magic != b"\x93NUMPY":
                raise FileError(path, "expected a single array (.npy), got an archive" if magic[:2] == b"PK"
                                else "not a readable .npy file (it has no .npy header)")
            f.seek(0)
            shape, dtype, need = npy_header(f)
            have = p.stat().st_size - f.tell()
            if dtype.hasobject:
                raise FileError(path, "holds Python objects, which almc never unpickles")
            if need > have:
                raise FileError(path, f"its header claims {dtype}[{', '.join(map(str, shape))}] ({need:,} bytes), "
                                      f"but the file holds {have:,}")
        x = np.load(p, allow_pickle=False)
    except FileError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise FileError(path, f"not a readable .npy file ({e})") from None
    return x


MAX_ARCHIVE_BYTES = 4 << 30  # what an .npz may inflate to (data sets, weights, checkpoints)


def npy_header(f) -> tuple[tuple, object, int]:
    """(shape, dtype, bytes of data) from the .npy header at `f`'s position: the header alone is
    read and nothing is allocated. Raises ValueError for a file that is not .npy."""
    import numpy as np

    fmt = np.lib.format
    version = fmt.read_magic(f)
    shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
    return shape, dtype, int(np.prod(shape, dtype=object)) * dtype.itemsize


def check_npz(path, limit: int = MAX_ARCHIVE_BYTES) -> None:
    """Refuse, before anything is inflated or allocated, an .npz whose members would inflate past
    `limit` in all, or one whose .npy header claims more bytes than its member holds (numpy would
    allocate the claimed array first). Anything else wrong is left to numpy's own reader."""
    import zipfile

    shown = elide(str(path))
    check_input_file(path)
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            total = sum(m.file_size for m in members)
            if total > limit:
                raise FileError(shown, f"its arrays would inflate to {total:,} bytes, more than the {limit:,} "
                                       "almc reads from an archive")
            for m in members:
                if not m.filename.endswith(".npy"):
                    continue
                with z.open(m) as f:
                    try:
                        shape, dtype, need = npy_header(f)
                    except ValueError:
                        continue  # not an array header: numpy's reader says what is wrong
                if need > m.file_size:
                    raise FileError(shown, f"array '{m.filename[:-4]}' claims {dtype}[{', '.join(map(str, shape))}] "
                                           f"({need:,} bytes), but its member holds {m.file_size:,}")
    except (zipfile.BadZipFile, OSError, EOFError):
        return  # not a zip, or damaged: numpy's reader reports it
