"""Attention architectures for image restoration (pure torch, no I/O)."""

from .registry import Architecture, build_model, get_architecture, list_architectures

__all__ = ["Architecture", "build_model", "get_architecture", "list_architectures"]
