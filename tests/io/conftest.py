"""Helpers for the io tests: a dask callback that records computed task results."""

from __future__ import annotations

import numpy as np
import pytest
from dask.callbacks import Callback


class TaskRecorder(Callback):
    """Count executed dask tasks and the largest array any task returned."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.max_nbytes = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        self.count += 1
        if isinstance(result, np.ndarray):
            self.max_nbytes = max(self.max_nbytes, result.nbytes)


@pytest.fixture
def recorder():
    """A `TaskRecorder` active for the duration of the test."""
    with TaskRecorder() as rec:
        yield rec
