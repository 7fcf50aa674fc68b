"""The ``rnnkit`` command line: parse, hand the options to the command's module
(:mod:`rnnkit.commands`), and turn what goes wrong into one line and an exit status."""
from __future__ import annotations

import errno
import sys

from .commands import build_parser, command

__all__ = ["main"]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    for name in getattr(command(args.command), "AT_LEAST_ONE", ()):
        value = getattr(args, name, None)
        if isinstance(value, (int, float)) and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"rnnkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:                 # a second Ctrl-C during training, or one anywhere else
        print(f"\nrnnkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:                  # the file system refused: one line naming the file and the fix
        fix = {errno.ENOSPC: "free some space, or write to another disk (--out, --cache-dir)",
               errno.EACCES: "choose a folder you can write to (--out, --cache-dir)",
               errno.EROFS: "choose a folder on a writable disk (--out, --cache-dir)",
               errno.ENOTDIR: "a path that should be a folder is a file"}.get(error.errno, "check the path")
        print(f"rnnkit {args.command}: error: {error}; {fix}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
