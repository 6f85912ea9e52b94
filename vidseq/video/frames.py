"""What counts as a video file or a frame image, and the one way to list a frame folder.

Shared by the sources (:func:`vidseq.video.sources.open_source`), dataset validation
(:mod:`vidseq.sequences.manifest`) and the importers, so a folder that validates is a folder that opens.
"""

from __future__ import annotations

from pathlib import Path

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def is_image(path: Path) -> bool:
    """A regular file with a frame-image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(folder: Path) -> list[Path]:
    """Image files of a frame folder in natural order (``frame2.png`` before ``frame10.png``; natsort)."""
    from natsort import natsorted

    return natsorted((p for p in Path(folder).iterdir() if is_image(p)), key=lambda p: p.name)


__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "is_image", "list_images"]
