"""The ``rnnkit`` command line's commands, one module each, apart from the library.

A command's module has ``HELP`` (its line in ``rnnkit --help``), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status); optionally ``DESCRIPTION`` and ``EPILOG`` (its own
``--help``) and ``AT_LEAST_ONE`` (the options refused below 1 as usage errors). A new command is
its module plus its name in :data:`COMMANDS`, which also orders ``rnnkit --help``.
"""
from __future__ import annotations

import argparse
import importlib

from .._version import __version__

__all__ = ["COMMANDS", "command", "build_parser"]

COMMANDS = ("demo", "train", "prepare", "sample", "evaluate", "export", "forecast", "classify", "inspect", "bench")


def command(name: str):
    """The module of command ``name``."""
    return importlib.import_module(f"{__name__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent neural networks as state machines.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = command(name)
        sub = commands.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", None),
                                  epilog=getattr(module, "EPILOG", None))
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser
