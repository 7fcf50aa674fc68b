"""What ``rnnkit train`` does with a language model's data and results: token files, resume, reports.

The options themselves (defaults, presets, levels, the checks between them) are
:mod:`rnnkit.commands.train_options`'s table; this module takes their values:

- :func:`data_record`: the data options as the checkpoint keeps them; :func:`main_split` the
  parts the main text is cut into.
- :func:`prepare_files`: the token files of a new run (prepared as needed), as the record a
  checkpoint keeps; :func:`find_files` finds them again on ``--resume``; :func:`load` opens
  them as train / validation / test :class:`~rnnkit.data.tokens.TokenSplit`.
- :func:`split_report`: one summary line per split (loss, perplexity, bits per character);
  :func:`print_summary`: what a finished run prints.
- :func:`wants_cache`, :func:`cache_report`, :func:`saved_cache`: the neural cache a word-level
  run reports beside its test figure (:mod:`rnnkit.train.cache`), chosen on validation and
  kept in the run directory's ``cache.json`` for ``rnnkit evaluate``.

``--device`` is not among the recorded options: where a run trains is no part of it, so a run
trained on a GPU may resume on the CPU. ``--precision`` is: a resumed run keeps it.
"""
from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

from ..data.tokens import TokenFile, TokenFileError, is_token_file, prepare
from .._files import write_text_atomic
from ..models.language_model import perplexity
from ..models.loading import load_language_model
from .cache import CacheSettings, cache_nll, choose_cache

__all__ = ["data_record", "main_split", "prepare_files", "find_files", "saved_data_record", "load", "split_report",
           "print_summary", "wants_cache", "cache_report", "saved_cache"]


def _absolute(path):
    return None if path is None or path == "-" else str(Path(path).resolve())


def data_record(args) -> dict:
    """The data options as a checkpoint keeps them (paths absolute, so a run resumes from anywhere)."""
    return {"path": args.data if args.data == "-" else _absolute(args.data), "level": args.level,
            "validation_fraction": args.validation_fraction, "test_fraction": args.test_fraction,
            "validation_data": _absolute(args.validation_data), "test_data": _absolute(args.test_data),
            "min_count": args.min_count, "max_vocab": args.max_vocab}


def saved_data_record(config: dict) -> dict:
    """The data record of a checkpoint's config, in today's layout. Runs saved before the
    validation fraction was recorded hold the bare path; they used the default fraction, 0.1."""
    saved = config.get("data")
    if not isinstance(saved, dict):
        saved = {"path": saved, "validation_fraction": 0.1}
    level = config.get("vocabulary", {}).get("level", "char")
    record = {"path": None, "level": level, "validation_fraction": 0.1, "test_fraction": 0.0,
              "validation_data": None, "test_data": None, "min_count": 1, "max_vocab": None}
    record.update(saved)
    return record


def main_split(record: dict) -> tuple:
    """The parts the main text is cut into, ``((name, fraction), ...)``; the fractions checked."""
    v = 0.0 if record["validation_data"] else record["validation_fraction"]
    t = 0.0 if record["test_data"] else record["test_fraction"]
    if not record["validation_data"] and not 0 < v < 1:
        raise ValueError(f"--validation-fraction must be strictly between 0 and 1, got {v}; or pass "
                         f"--validation-data")
    if not 0 <= t < 1:
        raise ValueError(f"--test-fraction must be in [0, 1), got {t} (0: no test split)")
    if v + t >= 1:
        raise ValueError(f"--validation-fraction {v} and --test-fraction {t} leave nothing to train on; "
                         f"their sum must be below 1")
    split = [("train", round(1 - v - t, 12))]
    if v > 0:
        split.append(("validation", v))
    if t > 0:
        split.append(("test", t))
    return tuple(split)


def _entry(tokens: TokenFile, part: str) -> list:
    return [str(tokens.path), part, tokens.id]


def prepare_files(record: dict, *, cache=None, progress=True) -> dict:
    """The token files of a new run, prepared as needed: ``{split: [folder, part, id]}``, what
    the checkpoint records (:func:`load` opens them)."""
    if record["path"] not in (None, "-") and is_token_file(record["path"]):
        main = TokenFile(record["path"])
        if main.level != record["level"]:
            raise ValueError(f"--level {record['level']} differs from the token file's {main.level}; drop "
                             f"--level, or prepare the text again with --level {record['level']}")
        if "train" not in main.meta["parts"]:
            raise ValueError(f"'{record['path']}' has no train part (it holds {list(main.meta['parts'])}); it "
                             f"was prepared for evaluation, not training")
    else:
        main = prepare(record["path"], level=record["level"], split=main_split(record),
                       min_count=record["min_count"], max_vocab=record["max_vocab"], cache=cache,
                       progress=progress)
    files = {name: _entry(main, name) for name in main.meta["parts"]}
    for name in ("validation", "test"):
        separate = record[f"{name}_data"]
        if separate:
            if name in files:
                raise ValueError(f"--{name}-data is given but '{record['path']}' already has a {name} part; "
                                 f"use one or the other")
            extra = prepare(separate, level=main.level, split=((name, 1.0),), vocab=main.vocab, cache=cache,
                            progress=progress)
            files[name] = _entry(extra, name)
    if "validation" not in files:
        raise ValueError(f"'{record['path']}' has no validation part; prepare it with a --validation-fraction "
                         f"or pass --validation-data")
    return files


def load(files: dict) -> tuple:
    """``(splits, vocabulary)``: train / validation / test TokenSplits (test may be None) of the
    token files ``files`` names, and the vocabulary of the training file."""
    splits, opened = {"test": None}, {}
    for name, (folder, part, _) in files.items():
        if folder not in opened:
            opened[folder] = TokenFile(folder)
        splits[name] = opened[folder].parts[part]
    return splits, opened[files["train"][0]].vocab


def find_files(record: dict, vocab, *, cache=None, progress=True) -> dict:
    """The token files of a run being resumed, as they were; prepared again from their
    sources when they are gone and the sources are unchanged."""
    files = record.get("files")
    if files is None:                # a run from before token files: its vocabulary, its old split
        main = prepare(record["path"], level=vocab.level, vocab=vocab, cache=cache, progress=progress,
                       split=(("train", 1 - record["validation_fraction"]),
                              ("validation", record["validation_fraction"])))
        return {name: _entry(main, name) for name in ("train", "validation")}
    for name, (folder, part, identity) in list(files.items()):
        if folder is None:
            continue
        try:
            found = TokenFile(folder)
            if found.id == identity:
                continue
            problem = f"'{folder}' now holds other tokens"
        except TokenFileError as error:
            problem = str(error)
        source = record["path"] if name in ("train",) or not record[f"{name}_data"] else record[f"{name}_data"]
        if source == "-":
            raise ValueError(f"cannot resume: this run read standard input, and its token file is gone "
                             f"({problem}); start a new run")
        if source is not None and not Path(source).exists():
            raise ValueError(f"cannot resume: the run's {name} tokens are gone ({problem}) and its source "
                             f"'{source}' is missing too")
        if name == "train" or not record[f"{name}_data"]:
            again = prepare(source, level=record["level"], split=main_split(record),
                            min_count=record["min_count"], max_vocab=record["max_vocab"], cache=cache,
                            progress=progress)
        else:
            again = prepare(source, level=record["level"], split=((name, 1.0),), vocab=vocab, cache=cache,
                            progress=progress)
        if again.id != identity:
            raise ValueError(f"cannot resume: the run's {name} tokens are gone ({problem}), and "
                             f"'{source or 'the default corpus'}' has changed since the run started, so they "
                             f"cannot be made again; start a new run (--out NEW_DIRECTORY)")
        for other, entry in files.items():           # parts of the same file move with it
            if entry[0] == folder:
                files[other] = _entry(again, entry[1])
    if TokenFile(files["train"][0]).vocab != vocab:
        raise ValueError(f"cannot resume: the token file '{files['train'][0]}' was made with another "
                         f"vocabulary than the run's; start a new run")
    return files


def split_report(name: str, loss: float, split, level: str, counted: int) -> str:
    """One line: the loss per token, the perplexity (per word at word level) and the bits per
    character of the split's text, and how many tokens were scored."""
    unit = {"char": "char", "word": "word", "bpe": "token"}[level]
    per = {"char": "", "word": " per word", "bpe": " per token"}[level]
    bits = (loss * len(split) / split.characters / math.log(2)) if split.characters else float("nan")
    total = split.predictions
    scope = f"{counted:,} tokens" if counted >= total else f"first {counted:,} of {total:,} tokens"
    return (f"{name + ':':12}loss {loss:.4f} nats/{unit}, perplexity {perplexity(loss):.2f}{per}, "
            f"{bits:.3f} bits/char ({scope})")


def print_summary(summary, splits, vocab, out) -> None:
    """What ``rnnkit train`` prints at the end: the run's size and speed, the validation (and test)
    figures of the best checkpoint, and where the run and its plot are."""
    evaluated = summary["evaluated_tokens"]
    step = summary["best_step"]
    print(f"\nafter {summary['steps']:,} steps, {summary['tokens']:,} tokens, {summary['seconds']:.0f} s "
          f"({summary['tokens_per_second'] / 1e3:.1f}k tokens/s); best checkpoint: step {step}")
    print(split_report("validation", summary["best_validation_loss"], splits["validation"], vocab.level,
                       evaluated.get("validation", 0)) + " -- chose the checkpoint")
    cache = summary.get("cache")
    if summary["test_loss"] is not None:
        print(split_report("test", summary["test_loss"], splits["test"], vocab.level, evaluated["test"]))
        settings = cache and CacheSettings(cache["window"], cache["theta"], cache["lam"])
        if settings and settings.lam > 0:
            print(split_report("test+cache", cache["test_loss"], splits["test"], vocab.level, cache["tokens"])
                  + f" -- the model and {settings.describe()} (Grave et al. 2017), chosen on validation")
        elif settings:
            print(f"test+cache: not used -- {settings.describe()}")
    else:
        print("test:       none (--test-fraction 0 and no --test-data): the validation figure chose the "
              "checkpoint, so it is optimistic")
    print(f"run directory: {out}")
    if summary["plot"]:
        print(f"loss plot:     {summary['plot']}")
    else:
        print(f"loss plot:     not written ({summary['plot_note']})")
    print(f"sample from it: rnnkit sample {shlex.quote(str(out))} --length 500")


CACHE_FILE = "cache.json"


def wants_cache(asked, level: str, preset) -> bool:
    """Whether a run reports a neural cache: as asked (``--neural-cache`` / ``--no-neural-cache``),
    else at word level without a preset (a preset reproduces a paper's figure, which has none)."""
    return bool(asked) if asked is not None else level == "word" and not preset


def cache_report(out, splits, config, device=None) -> dict:
    """Choose a neural cache on the validation split with the best checkpoint, score the test split
    with it once, and keep both in ``out/cache.json``; returns what it keeps."""
    model, _, _ = load_language_model(out, "best", device=device)
    options = {"batch_size": config.batch_size, "truncation": max(config.truncation, 256),
               "max_tokens": config.eval_tokens}
    settings, validation = choose_cache(model, splits["validation"], **options)
    total, count = cache_nll(model, splits["test"], settings, **options)
    report = {**settings.to_dict(), "validation_loss": validation, "test_loss": total / count, "tokens": count}
    write_text_atomic(Path(out) / CACHE_FILE, json.dumps(report, indent=1) + "\n")
    return report


def saved_cache(run_dir):
    """The :class:`~rnnkit.train.cache.CacheSettings` a run chose, or None when it has none or chose
    the model alone (lambda 0)."""
    path = Path(run_dir) / CACHE_FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        settings = CacheSettings(int(saved["window"]), float(saved["theta"]), float(saved["lam"]))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"'{path}' is damaged ({error}); delete it to evaluate without the cache") from None
    return settings if settings.lam > 0 else None
