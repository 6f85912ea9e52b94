"""Atomic file writes and content hashing, shared by every stage that writes outputs.

An output either exists complete or not at all: data is written to a temporary file in the
same directory, flushed, fsynced and then ``os.replace``-d over the final name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Self


def _umask_mode() -> int:
    """Mode a normally created file gets (mkstemp would leave 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on clean exit it replaces ``path``, on error it is removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f"{suffix}.part", dir=final.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for libraries that want a filename; replaced on success.

    The temp name keeps the final suffix so libraries that pick a format by extension still work.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.part.", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: list[Path], root: Path | None = None) -> str:
    """Hex sha256 over several files (names relative to ``root`` and contents), order-sensitive."""
    h = hashlib.sha256()
    for p in paths:
        name = str(p.relative_to(root)) if root else p.name
        h.update(name.encode() + b"\0")
        h.update(sha256_file(p).encode())
    return h.hexdigest()


# -- output folders: writability, per-output locks, staged folders ------------------------------------

_FS_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST,
              errno.EIO, errno.ENAMETOOLONG)


def is_output_oserror(exc: BaseException) -> bool:
    """True for an OSError that is about the output location (permissions, read-only, full disk), not a bug."""
    return isinstance(exc, OSError) and exc.errno in _FS_ERRNOS


def ensure_writable_dir(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` (and parents) if needed and prove it is writable by creating and deleting a probe file.

    Returns True if the folder was created by this call (so a caller that fails before writing anything can
    remove it again). Raises :class:`~vidseq.errors.OutputError` with one line otherwise.
    """
    from vidseq.errors import OutputError

    p = Path(path)
    created = not p.exists()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"output path exists and is not a folder: {p}") from None
    except OSError as exc:
        raise OutputError(f"cannot create output folder {p}: {exc.strerror or exc}") from None
    if not p.is_dir():
        raise OutputError(f"output path exists and is not a folder: {p}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".vidseq-write-test.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output folder is not writable: {p} ({exc.strerror or exc})") from None
    return created


def remove_if_empty(path: str | os.PathLike[str]) -> None:
    """Remove a folder if it holds nothing (a run that failed before writing leaves no empty folder)."""
    with contextlib.suppress(OSError):
        Path(path).rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    """An exclusive lock on one output (a run folder or file): ``<parent>/.<name>.lock`` with pid/host inside.

    The lock is an ``flock`` on the lock file, so a run that dies (even ``kill -9``) releases it with its
    process; the pid/host written into the file name the holder in the error message. A lock file left
    behind by a dead process on this host is stale and taken over (logged). Use as a context manager.
    """

    def __init__(self, target: str | os.PathLike[str]) -> None:
        t = Path(target)
        self.target = t
        self.path = t.parent / f".{t.name}.lock"
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> Self:
        import fcntl
        import logging
        import socket
        import time

        from vidseq.errors import OutputError, OutputLockedError

        host = socket.gethostname()
        for _ in range(5):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot create lock file {self.path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                h = self._holder()
                who = f"pid {h.get('pid', '?')} on {h.get('host', '?')}, since {h.get('started', '?')}"
                raise OutputLockedError(f"{self.target} is being written by another run ({who}); "
                                        f"wait for it, or delete {self.path} if that run is gone") from None
            # the file may have been unlinked by the previous holder between open and flock: retry on the new one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = self._holder()
            if old.get("pid") and old.get("host") == host and not _pid_alive(int(old["pid"])):
                logging.getLogger(__name__).info("%s: stale lock of dead pid %s taken over", self.path, old["pid"])
            elif old.get("pid") and old.get("host") not in (None, host):
                logging.getLogger(__name__).warning("%s: lock file of pid %s on %s was not held; taken over",
                                                    self.path, old["pid"], old["host"])
            info = json.dumps({"pid": os.getpid(), "host": host,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, info, 0)
            self._fd = fd
            return self
        raise OutputLockedError(f"{self.target}: lock file {self.path} keeps changing; another run is starting")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still holding it: a waiter re-checks the inode (see acquire)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def staging_dir(final: str | os.PathLike[str]) -> Path:
    """A fresh hidden folder beside ``final`` to write a run into (same filesystem, so the rename is atomic)."""
    f = Path(final)
    f.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{f.name}.partial.", dir=f.parent))


def stale_staging_dirs(final: str | os.PathLike[str]) -> list[Path]:
    """Staging folders of earlier runs of ``final`` that were killed before finishing (call under the lock)."""
    f = Path(final)
    return sorted(f.parent.glob(f".{f.name}.partial.*")) + sorted(f.parent.glob(f".{f.name}.old.*"))


def publish_dir(staged: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Move a finished staging folder to ``final``, replacing what was there.

    A reader sees the old folder or the new one, never a mix: the old one is renamed aside first, then
    the new one renamed into place, then the old one deleted.
    """
    import shutil

    s, f = Path(staged), Path(final)
    old: Path | None = None
    if f.exists() or f.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{f.name}.old.", dir=f.parent))
        os.rmdir(old)
        os.replace(f, old)
    os.replace(s, f)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return f
