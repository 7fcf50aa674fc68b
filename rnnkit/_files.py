"""File-system helpers shared by the modules that write runs and token files."""
from __future__ import annotations

import os

__all__ = ["umask_mode"]


def umask_mode(path, directory: bool = False) -> None:
    """Give ``path`` (made by ``tempfile``, which keeps it to its owner: 0600/0700) the mode an
    ordinary ``open``/``mkdir`` would, under the user's umask, so that others can read a shared run."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if directory else 0o666) & ~mask)
