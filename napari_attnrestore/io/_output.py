"""Checks shared by the writers before they create anything."""

from __future__ import annotations

import os

from .errors import ImageWriteError


def check_axes(axes: str, ndim: int, path: str) -> None:
    """Raise ImageWriteError if ``axes`` does not name each of the ``ndim`` dimensions once."""
    if len(axes) != ndim or len(set(axes)) != len(axes):
        raise ImageWriteError(path, f"axes '{axes}' must name each of the {ndim} dimensions once")


def ensure_writable_parent(path: str) -> None:
    """Create the parent folder of ``path`` if needed and check that it is writable."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(path, f"cannot create the parent folder ({exc.strerror or exc})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ImageWriteError(path, f"the parent folder {parent} is not writable")
