"""Errors raised by the mtbio volume readers."""

from __future__ import annotations

import os

__all__ = ["VolumeError"]


class VolumeError(ValueError):
    """A volume or label file could not be opened or read.

    The message always starts with the file or folder it is about, then says what is wrong with it, e.g.
    ``"/data/stack: section 3 (/data/stack/3.png) is 512x512, the first section is 1024x1024"``.

    Attributes:
        path: the file or folder the error is about (``None`` only when no single path applies).
    """

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{self.path}: {problem}")
