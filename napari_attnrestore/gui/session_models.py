"""Networks made in this session (trained in the Train widget) shared with the other widgets.

Imports neither Qt nor napari.  The Train widget :func:`add`\\ s every model it trains;
each Restore widget lists the models already here when it opens and :func:`subscribe`\\ s
to hear of new ones, so that a freshly trained network can restore right away.  All calls
happen on the GUI thread.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["add", "clear", "get", "items", "subscribe", "unsubscribe"]

Listener = Callable[[str, Any], None]

_MODELS: dict[str, Any] = {}
_LISTENERS: list[Any] = []  # weakref.WeakMethod for bound methods (no leak), else the callable


def items() -> list[tuple[str, Any]]:
    """``(name, module)`` of every session model, oldest first."""
    return list(_MODELS.items())


def get(name: str) -> Any:
    """The session model called ``name`` (KeyError if there is none)."""
    return _MODELS[name]


def add(name: str, module: Any) -> str:
    """Register ``module`` under ``name`` (made unique: ``name #2``, ...); tell the listeners.

    Returns the name it was registered under.
    """
    unique, i = name, 2
    while unique in _MODELS:
        unique, i = f"{name} #{i}", i + 1
    _MODELS[unique] = module
    for ref in list(_LISTENERS):
        fn = ref() if isinstance(ref, weakref.WeakMethod) else ref
        if fn is None:
            _LISTENERS.remove(ref)
            continue
        try:
            fn(unique, module)
        except RuntimeError:  # a listener whose Qt widget was deleted: forget it
            _LISTENERS.remove(ref)
    return unique


def subscribe(fn: Listener) -> None:
    """Call ``fn(name, module)`` for every model added from now on (bound methods held weakly)."""
    _LISTENERS.append(weakref.WeakMethod(fn) if hasattr(fn, "__self__") else fn)


def unsubscribe(fn: Listener) -> None:
    """Stop calling ``fn`` (no error if it was not subscribed)."""
    for ref in list(_LISTENERS):
        target = ref() if isinstance(ref, weakref.WeakMethod) else ref
        if target is None or target == fn:
            _LISTENERS.remove(ref)


def clear() -> None:
    """Forget every session model (listeners stay subscribed)."""
    _MODELS.clear()
