"""Files readable by their owner only: reports, manifests, transcripts and state hold patient data.

Files are 0600 and directories this process creates 0700, whatever the umask. `write_private` writes atomically
(a 0600 temporary file beside the target, fsynced, renamed over it), so a reader never sees half a file and a
symlink at the target is replaced, never written through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

OWNER_ONLY_FILE = 0o600
OWNER_ONLY_DIR = 0o700
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def owner_only_opener(path: str, flags: int) -> int:
    """`open(..., opener=)`: a file opened to be written is 0600 whatever the umask (a new one, and one found
    readable by others: a `.part` resumed becomes the recording), and a symlink at the path is never followed (the
    open fails instead)."""
    fd = os.open(path, flags | NOFOLLOW, OWNER_ONLY_FILE)
    if flags & (os.O_WRONLY | os.O_RDWR):
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a device or a pipe is not ours to narrow (/dev/null, as root)
                raise OSError(errno.EINVAL, "a regular file is needed, not a device, pipe or socket", path)
            os.fchmod(fd, OWNER_ONLY_FILE)
        except BaseException:
            os.close(fd)
            raise
    return fd


def private_dir(path: Path) -> list[Path]:
    """Create `path` and any missing parents as 0700 directories (existing ones are left as they are); returns the
    ones it created, deepest first (so a caller can take them back when nothing was written there)."""
    missing = []
    for directory in (path, *path.parents):
        if directory.exists():
            break
        missing.append(directory)
    for directory in reversed(missing):
        directory.mkdir(mode=OWNER_ONLY_DIR, exist_ok=True)
        os.chmod(directory, OWNER_ONLY_DIR)
    return missing


def private_file(path: Path) -> Path:
    """The file exists and is owner-only (a store that a library opens by name): 0600, in a 0700 directory when
    one is made for it. An existing file readable by others is narrowed to 0600; a directory is an error."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a file is needed, not a directory", str(path))
    private_dir(path.parent)
    if not path.exists():
        path.touch(mode=OWNER_ONLY_FILE)
    if not path.is_file():  # a device, a pipe or a socket: never chmod it (run as root, /dev/null became 0600)
        raise OSError(errno.EINVAL, "a regular file is needed, not a device, pipe or socket", str(path))
    os.chmod(path, OWNER_ONLY_FILE)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` (UTF-8, `\\n` line ends) to `path`, owner-only and atomically."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, OWNER_ONLY_FILE)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
