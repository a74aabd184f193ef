"""The images a benchmark runs on: every image file of a folder, read into memory."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

__all__ = ["DEFAULT_FOLDER", "SUFFIXES", "Corpus"]

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}


@dataclass
class Corpus:
    """The images, largest first."""

    folder: Path
    paths: list[Path]
    data: list[bytes]
    megapixels: list[float]

    @classmethod
    def load(cls, folder: Path) -> Corpus:
        """Read every image file of ``folder``."""
        if not folder.is_dir():
            raise SystemExit(
                f"no folder {folder}: the corpus is read from ../shared/corpus next to the "
                "checkout; pass another folder of images on the command line"
            )
        paths = [p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()]
        paths.sort(key=lambda p: (-p.stat().st_size, p.name))
        if not paths:
            raise SystemExit(f"no images ({', '.join(sorted(SUFFIXES))}) in {folder}")
        data = [p.read_bytes() for p in paths]
        mps = []
        for blob in data:
            with Image.open(io.BytesIO(blob)) as im:
                mps.append(im.width * im.height / 1e6)
        return cls(folder, paths, data, mps)

    def sample(self, size: int) -> list[int]:
        """Indices of ``size`` images spread evenly over the names (0: all; < 0: none)."""
        by_name = sorted(range(len(self.paths)), key=lambda i: self.paths[i].name)
        if size < 0:
            return []
        if size == 0 or size >= len(by_name):
            return by_name
        step = len(by_name) / size
        return [by_name[int(step / 2 + k * step)] for k in range(size)]
