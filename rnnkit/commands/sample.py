"""``rnnkit sample``: text streamed from a trained language model, token by token."""
from __future__ import annotations

import sys

from .._arguments import check_int, check_number, check_positive
from ..generate import stream
from ..models import load_language_model
from ._common import add_device, device

HELP = "generate text from a trained model"
DESCRIPTION = "Stream text from a trained language model, token by token."
AT_LEAST_ONE = ("length",)


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a training run")
    parser.add_argument("--prime", default="", help="text to start from")
    parser.add_argument("--length", type=int, default=500, help="tokens to generate (default 500)")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature (default 0.8)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1]")
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token")
    parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")
    parser.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    add_device(parser)


def run(args) -> int:
    # the options in the command line's own words (stream() would name its Python arguments)
    check_positive("", "--temperature", args.temperature, hint="use --greedy for the most likely token at every step")
    if args.top_k is not None:
        check_int("", "--top-k", args.top_k, hint="leave it out to sample among every token")
    if args.top_p is not None:
        check_number("", "--top-p", args.top_p, low=0.0, high=1.0, low_closed=False,
                     hint="leave it out to sample among every token")
    if args.greedy and (args.top_k is not None or args.top_p is not None):
        raise ValueError("--greedy takes the most likely token, so --top-k and --top-p would do nothing; "
                         "drop one or the other")
    model, vocab, _ = load_language_model(args.run_dir, args.checkpoint, device=device(args))
    # stream() checks the options and the prime when called, before anything is printed
    pieces = stream(model, vocab, args.prime, length=args.length, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, greedy=args.greedy, seed=args.seed)
    sys.stdout.write(args.prime)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
