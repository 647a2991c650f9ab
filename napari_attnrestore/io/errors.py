"""Exceptions raised by the readers and writers.

Every message names the file and the problem on one line, e.g.
``noisy.tif: truncated TIFF (page 0 data ends at byte 120256, file has 60128 bytes)``.
"""

from __future__ import annotations

import os

__all__ = ["OVERWRITE", "RESUME", "DamagedFileError", "ImageReadError", "ImageWriteError", "UnfinishedOutputError"]

#: how each front door asks to replace, or to continue, an existing output
OVERWRITE = "overwrite=True (CLI: --overwrite; Restore widget: 'if it exists: overwrite')"
RESUME = "resume=True (CLI: --resume; Restore widget: 'if it exists: resume')"


def _one_line(text: object) -> str:
    """Collapse whitespace and newlines of ``text`` into a single line."""
    return " ".join(str(text).split())


class _PathError:
    """Mixin storing ``path`` and ``problem`` and formatting ``"PATH: problem"``."""

    path: str
    problem: str

    def __init__(self, path: str | os.PathLike, problem: object) -> None:
        self.path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
        self.problem = _one_line(problem)
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


class ImageReadError(_PathError, ValueError):
    """An input image cannot be opened or read.

    Parameters
    ----------
    path : str or os.PathLike
        The file or store that failed.
    problem : str
        What went wrong, in a few words.
    """


class UnfinishedOutputError(ImageReadError):
    """An output this package has not finished writing (its unwritten chunks would read as zeros)."""


class DamagedFileError(ImageReadError):
    """A file cut short or damaged, of which other readers would show a part as the whole
    (a stack's first plane) or zeros."""


class ImageWriteError(_PathError, OSError):
    """An output image cannot be created or written.

    Parameters
    ----------
    path : str or os.PathLike
        The file or store that failed.
    problem : str
        What went wrong, in a few words.
    """
