"""``rnnkit prepare``: a text tokenized once into a memory-mapped token file."""
from __future__ import annotations

import shlex
import time

from ..data.tokens import prepare
from ..train import lm_run
from . import train_options as options

HELP = "tokenize a corpus once into a memory-mapped token file"
DESCRIPTION = ("Tokenize a text file, a directory of them or standard input into a token file (ids as uint8/16/32, "
               "the vocabulary built on the training part, the parts' ranges), streamed in blocks so that memory "
               "does not grow with the corpus. rnnkit train does this itself on first use (into the cache); "
               "prepare it explicitly to choose where it goes.")
# rnnkit train's data options, but for separate validation and test texts (each its own token file)
DATA = ("data", "level", "validation_fraction", "test_fraction", "min_count", "max_vocab", "cache_dir")
AT_LEAST_ONE = tuple(name for name in options.AT_LEAST_ONE if name in DATA)


def add_arguments(parser) -> None:
    options.add_options(parser, DATA)
    parser.add_argument("--out", metavar="DIR", help="the token file's folder (default: in the cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    options.resolve(args, None)
    split = lm_run.main_split(lm_run.data_record(args))
    started = time.perf_counter()
    tokens = prepare(args.data, level=args.level, split=split, min_count=args.min_count,
                     max_vocab=args.max_vocab, out=args.out, cache=args.cache_dir, progress=not args.quiet)
    print(f"{tokens.describe()}; in {time.perf_counter() - started:.1f} s")
    print(f"token file: {tokens.path}")
    print(f"train on it: rnnkit train --data {shlex.quote(str(tokens.path))}")
    return 0
