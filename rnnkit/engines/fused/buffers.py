"""Kept for rnnkit/models/hmm/inference.py until it imports :mod:`rnnkit._buffers`, where the pool lives."""
from ..._buffers import empty  # noqa: F401
