"""Atomic file writes and content hashing, shared by every stage that writes outputs.

An output either exists complete or not at all: data is written to a temporary file in the
same directory, flushed, fsynced and then ``os.replace``-d over the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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
