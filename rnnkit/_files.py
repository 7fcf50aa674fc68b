"""File-system helpers shared by the modules that write runs, token files and compiled code."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["umask_mode", "cache_root", "write_text_atomic", "write_figure_atomic", "new_folder"]


def cache_root() -> Path:
    """rnnkit's cache folder: ``$RNNKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnkit``, else
    ``~/.cache/rnnkit`` (prepared token files, the traced engine's compiled loops)."""
    if os.environ.get("RNNKIT_CACHE_DIR"):
        return Path(os.environ["RNNKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnkit"


def umask_mode(path, directory: bool = False) -> None:
    """Give ``path`` (made by ``tempfile``, which keeps it to its owner: 0600/0700) the mode an
    ordinary ``open``/``mkdir`` would, under the user's umask, so that others can read a shared run."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if directory else 0o666) & ~mask)


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, synced and then
    renamed over it: a crash leaves the old file or the new one, never a part of either."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask_mode(tmp)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_figure_atomic(fig, path) -> None:
    """Draw the matplotlib figure ``fig`` to ``path`` (PNG unless its suffix names another format matplotlib
    writes), all or nothing: into a temporary file beside it, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format=path.suffix[1:].lower() or "png")
        umask_mode(staging)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def new_folder(path):
    """The new folder ``path``, written all or nothing: the block writes into a staging folder beside it
    (yielded), which becomes ``path`` by a rename once the block ends, and is removed if it raises. A
    ``path`` that exists is refused before anything is written."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"'{path}' exists; save to a new folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".rnnkit-", dir=path.parent))     # beside it: the move is a rename
    umask_mode(staging, directory=True)              # mkdtemp's 0700 would outlive the rename
    try:
        yield staging
        shutil.move(str(staging), str(path))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
