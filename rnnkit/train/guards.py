"""What keeps a training run whole: one trainer per run directory (:class:`RunLock`) and a clean
stop on Ctrl-C or SIGTERM (:class:`Interrupts`)."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

__all__ = ["RunLock", "Interrupts"]


class Interrupts:
    """Ctrl-C and SIGTERM during ``fit``: the first asks the loop to stop after the current step, and
    ``fit`` then ends as at a limit (validation, checkpoint, test, summary with ``stopped_by
    "interrupted"``), so nothing since the last check is lost; a second Ctrl-C stops at once. Only
    the main thread can take signals; elsewhere they keep their usual effect."""

    def __init__(self):
        self.requested, self._saved = None, {}

    def __enter__(self):
        self.requested, self._saved = None, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt                   # the second Ctrl-C: at once
        self.requested = signal.Signals(signum).name
        print(f"\nrnnkit: {self.requested} received: stopping after this step and saving a checkpoint "
              f"(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved = {}
        return False


class RunLock:
    """The run directory held by one trainer at a time: an advisory lock on ``run/.lock`` (which
    names the holder's pid), taken for the length of ``fit`` and let go by the system when the
    process ends however it ends. A second trainer on the same directory gets a clear error
    instead of sharing checkpoints and metrics with the first."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path, self.enabled, self.handle = Path(run_dir) / ".lock", enabled, None

    def __enter__(self):
        if not self.enabled:
            return self
        try:
            import fcntl
        except ImportError:                    # no advisory locks here (Windows): run unlocked
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ValueError(f"'{self.path.parent}' is in use by another training run (pid {holder}); wait "
                             f"for it to finish, or train into another --out directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()                # closing lets the lock go
            self.handle = None
        return False
