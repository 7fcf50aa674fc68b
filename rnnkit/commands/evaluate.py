"""``rnnkit evaluate``: a trained language model, or an ensemble of runs, scored on a text."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..data.tokens import TokenFile, is_token_file, prepare
from ..models import load_language_model
from ..train import lm_run
from ..train.cache import cache_nll
from ..train.evaluation import ensemble_nll, token_nll
from ._common import add_device, device

HELP = "loss, perplexity and bits per character on a text"
DESCRIPTION = ("Evaluate a trained language model on a text: every token is predicted once (at word level the "
               "first from <eos>, so that words + lines are scored, as papers count them), in the run's batch of "
               "parallel rows with the state carried along each. Several runs trained on the same text are "
               "evaluated as an ensemble: each token's probability is the mean of theirs.")
AT_LEAST_ONE = ("batch_size",)


def add_arguments(parser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run's --out directory; several for "
                        "an ensemble")
    parser.add_argument("--data", required=True, metavar="PATH", help="text file, directory, or -")
    parser.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    parser.add_argument("--batch-size", type=int, help="parallel rows (default: the run's batch size)")
    parser.add_argument("--cache-dir", metavar="DIR", help="where token files are kept (default "
                        "$RNNKIT_CACHE_DIR or ~/.cache/rnnkit)")
    add_device(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    """Print the figures of ``args.run_dirs`` on ``args.data``: one run alone (and with the neural
    cache it chose), or several as an ensemble, with each run's own figure beside it."""
    where = device(args)
    runs = [str(run) for run in args.run_dirs]
    twice = sorted({run for run in runs if runs.count(run) > 1})
    if twice:
        raise ValueError(f"'{twice[0]}' is given more than once; an ensemble takes each run once")
    loaded = [load_language_model(run, args.checkpoint, device=where) for run in runs]
    model, vocab, config = loaded[0]
    for run, (_, other, _) in zip(runs[1:], loaded[1:]):
        if other != vocab:
            raise ValueError(f"'{run}' has another vocabulary than '{runs[0]}'; the runs of an ensemble must be "
                             f"trained on the same text with the same token options")
    text = _text(args, vocab)
    rows = args.batch_size or config.get("training", {}).get("batch_size", 32)
    counted = {"word": " (words + <eos>)"}.get(vocab.level, "")

    def figures(loss, count):
        return lm_run.split_report("", loss, text, vocab.level, count).split(":", 1)[1].strip()

    def unknown(count):
        first = len(text) - count            # the tokens predicted are the last `count` (a first one is context)
        found = sum(int(np.count_nonzero(text.tokens[i:i + (1 << 24)] == 0))
                    for i in range(first, len(text), 1 << 24))
        return f"; {found:,} unknown tokens counted as <unk>" if found else ""

    if len(loaded) > 1:
        total, members, count = ensemble_nll([m for m, _, _ in loaded], text, batch_size=rows, truncation=256)
        print(f"{count:,} {vocab.level} tokens{counted}, {rows} rows, an ensemble of {len(runs)} runs (the mean of "
              f"their probabilities): " + figures(total / count, count) + unknown(count))
        width = max(len(run) for run in runs)
        for run, member in zip(runs, members):
            print(f"  {run:{width}}  alone: " + figures(member / count, count))
        with_cache = [run for run in runs if lm_run.saved_cache(run) is not None]
        if with_cache:
            print(f"(not used here: the neural cache{'s' if len(with_cache) > 1 else ''} of {', '.join(with_cache)}, "
                  f"chosen for {'each' if len(with_cache) > 1 else 'that'} run alone)")
        return 0
    cache = lm_run.saved_cache(runs[0])
    if cache is not None:                        # one pass scores both: lam 0 is the model alone, exactly
        (total, cached), count = cache_nll(model, text, [replace(cache, lam=0.0), cache], batch_size=rows,
                                           truncation=256)
    else:
        total, count = token_nll(model, text, batch_size=rows, truncation=256)
    print(f"{count:,} {vocab.level} tokens{counted}, {rows} rows: " + figures(total / count, count) + unknown(count))
    if cache is not None:
        print(f"with {cache.describe()} (the run's, chosen on its validation text): " + figures(cached / count, count))
    return 0


def _text(args, vocab):
    """The split to score: a token file's test part (or its only part), else the text tokenized with ``vocab``."""
    if is_token_file(args.data):
        tokens = TokenFile(args.data)
        if tokens.vocab != vocab:
            raise ValueError(f"'{args.data}' was made with another vocabulary than this model's; evaluate the "
                             f"text itself, which is tokenized with the model's vocabulary")
        parts = tokens.parts
        name = "test" if "test" in parts else next(iter(parts)) if len(parts) == 1 else None
        if name is None:
            raise ValueError(f"'{args.data}' has the parts {list(parts)} and no test part; evaluate a text file")
        text = parts[name]
    else:
        text = prepare(args.data, level=vocab.level, split=(("text", 1.0),), vocab=vocab,
                       cache=args.cache_dir, progress=not args.quiet).parts["text"]
    if text.predictions < 1:
        raise ValueError(f"'{args.data}' holds {len(text)} token(s); evaluation needs at least 2")
    return text
