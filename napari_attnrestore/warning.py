"""The package's warning categories, and warnings that point at the caller's own line.

``warnings.filterwarnings("ignore", category=ar.AttnRestoreWarning)`` silences this
package's warnings (and only them); ``"error"`` turns them into exceptions, for a batch job
that should stop at a doubtful input instead of going on.
"""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class AttnRestoreWarning(UserWarning):
    """A doubtful input, setting or result that napari-attnrestore went on with."""


class CompileFallbackWarning(AttnRestoreWarning, RuntimeWarning):
    """``torch.compile`` failed; the job runs uncompiled (slower, with the same result)."""


def warn(message: str, category: type[Warning] = AttnRestoreWarning) -> None:
    """Warn ``message`` from the first line outside this package that led here (the user's
    call, not the internal line that found the problem), as ``warnings.warn`` would with the
    right ``stacklevel`` however deep the call chain is."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
