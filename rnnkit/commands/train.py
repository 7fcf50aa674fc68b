"""``rnnkit train``: a language model trained on a text, from the command line's options to the
trainer's step loop. Its options are :mod:`.train_options`' table; the data and the reports are
:mod:`rnnkit.train.lm_run`'s."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch

from .._version import __version__
from ..data import Vocabulary, describe_default_corpus
from ..data.tokens import TokenFile, is_token_file
from ..models import LanguageModelConfig, build_language_model
from ..train import TensorBoardLogger, TrainConfig, Trainer, TrainingDiverged, lm_run, read_checkpoint
from ..train.distributed import is_main, mixed_precision, setup, share_from_main, teardown
from ..train.recipes import PRESETS, describe_preset, preset_values
from . import train_options as options

HELP = "train a language model on a text corpus"
DESCRIPTION = ("Train a character, word or BPE language model with truncated backpropagation through time. With "
               "no --data it trains on a fixed selection of Python's own standard-library source, which every "
               "Python installation has. The text is tokenized once into a token file (cached; see rnnkit "
               "prepare) and read in place. Each option gives its default, and the word and bpe levels' where "
               "they differ.")
EPILOG = "presets (--preset): " + "; ".join(f"{name}: {entry['about']}" for name, entry in PRESETS.items())
AT_LEAST_ONE = options.AT_LEAST_ONE


def add_arguments(parser) -> None:
    options.add_options(parser)


def run(args) -> int:
    out = Path(args.out)
    given = {name for name in options.DEFAULTS if getattr(args, name, None) is not None}
    _, world, device = setup(args.device, option="--device")
    main_process = is_main()                     # asked now: after teardown every process looks like rank 0
    try:
        train_config, model_config, record, preset = (_resumed if args.resume else _new)(args, out, given)
        mixed_precision(device, train_config.precision)        # a precision this device lacks: refused now
        splits, vocab = lm_run.load(record["files"])
        if model_config is None:
            model_config = LanguageModelConfig(vocab_size=len(vocab), **options.model_options(args))
        torch.manual_seed(train_config.seed)
        model = _build(model_config)
        if main_process:
            _describe(model, model_config, train_config, splits, vocab, record, device, world)
        loggers = [TensorBoardLogger(args.tensorboard or out / "tensorboard")] \
            if args.tensorboard is not None and main_process else []
        trainer = Trainer(model, train_config, out, progress=not args.quiet, loggers=loggers, device=device,
                          checkpoint_config={"model": model_config.to_dict(), "vocabulary": vocab.to_dict(),
                                             "data": record, "preset": args.preset, "rnnkit_version": __version__})
        try:
            summary = trainer.fit(splits["train"], splits["validation"], test=splits["test"], resume=args.resume)
        except TrainingDiverged as error:
            print(f"rnnkit: training stopped: {error}", file=sys.stderr)
            return 1
    finally:
        teardown()
    interrupted = str(summary["stopped_by"]).startswith("interrupted")       # Ctrl-C: no extra work
    if main_process:
        if lm_run.wants_cache(args.neural_cache, vocab.level, preset) and splits["test"] is not None \
                and not interrupted:
            summary["cache"] = lm_run.cache_report(out, splits, train_config, device)
        lm_run.print_summary(summary, splits, vocab, out)
    if interrupted:
        if main_process:
            print(f"{summary['stopped_by']} at step {summary['steps']:,}; the checkpoint is saved; continue with: "
                  f"rnnkit train --resume --out {shlex.quote(str(out))}")
        return 130
    return 0


def _new(args, out: Path, given: set) -> tuple:
    """A new run: ``(TrainConfig, None, data record, preset)``, the options resolved (preset, level,
    defaults) and the data's token files prepared; the model's config waits for the vocabulary."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is a file; --out names the run's directory")
    options.check_values(args)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"'{out}' already holds files; pass --resume to continue that run, or "
                         f"--out NEW_DIRECTORY to start another")
    preset = preset_values(args.preset) if args.preset else None
    if args.level is None and args.data not in (None, "-") and is_token_file(args.data):
        args.level = TokenFile(args.data).level           # a prepared file knows its level
    options.resolve(args, preset)
    if args.preset and is_main():
        print(describe_preset(args.preset, overridden=given & set(preset)))
    record = lm_run.data_record(args)
    record["files"] = share_from_main(lambda: lm_run.prepare_files(record, cache=args.cache_dir,
                                                                   progress=not args.quiet))
    options.default_limit(args)
    return TrainConfig(**options.training_options(args)), None, record, args.preset


def _resumed(args, out: Path, given: set) -> tuple:
    """A resumed run: ``(TrainConfig, LanguageModelConfig, data record, preset)`` as the checkpoint
    has them, with the limits and the learning rate given; any other option that differs is refused."""
    _, saved, _ = read_checkpoint(out, "latest")
    vocab = Vocabulary.from_dict(saved["vocabulary"])
    options.resolve(args, None)
    if args.preset is not None and args.preset != saved.get("preset"):
        raise ValueError(f"--preset {args.preset} differs from this run's {saved.get('preset') or 'no preset'}: "
                         f"a resumed run keeps its settings; drop --preset")
    options.check_resume(given, args, saved)
    train_values = dict(saved["training"])
    for name in options.RESUMABLE:                 # limits may be extended, the learning rate changed
        asked = name in given if name == "lr" else getattr(args, name) is not None   # limits: no defaults
        if asked and getattr(args, name) != train_values.get(name):
            if name == "lr" and is_main():
                print(f"resuming with --lr {args.lr:g} (the run had {train_values['lr']:g}); the "
                      f"schedule continues from its step with it, and the next checkpoint records it")
            train_values[name] = getattr(args, name)
    record = lm_run.saved_data_record(saved)
    record["files"] = share_from_main(lambda: lm_run.find_files(record, vocab, cache=args.cache_dir,
                                                                progress=not args.quiet))
    return (TrainConfig.from_dict(train_values), LanguageModelConfig.from_dict(saved["model"]), record,
            saved.get("preset"))


def _build(model_config):
    """The model, or one line saying it does not fit in memory and what to make smaller."""
    try:
        return build_language_model(model_config)
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "allocate" not in str(error):
            raise
        with torch.device("meta"):                       # counted without memory
            parameters = sum(p.numel() for p in build_language_model(model_config).parameters())
        raise ValueError(f"the model does not fit in memory ({parameters:,} parameters, "
                         f"{4 * parameters / 2 ** 30:,.1f} GiB in float32); choose a smaller --hidden-size, "
                         f"--embedding-size or --num-layers"
                         + (", or fewer --members or --snapshots" if model_config.models > 1 else "")) from None


def _describe(model, model_config, train_config, splits, vocab, record, device, world) -> None:
    """The corpus and model lines a run starts with."""
    counts = ", ".join(f"{len(splits[name]):,} for {name}" for name in ("train", "validation", "test")
                       if splits[name] is not None)
    source = describe_default_corpus() if record["path"] is None else \
        "standard input" if record["path"] == "-" else f"'{record['path']}'"
    print(f"corpus: {source}; {len(vocab):,} {vocab.level} tokens in the vocabulary; {counts}"
          + ("" if splits["test"] is not None else " (no test split)"))
    params = sum(p.numel() for p in model.parameters())
    members = (f"{model_config.members} members of " if model_config.members > 1 else
               f"{model_config.snapshots} snapshots of " if model_config.snapshots > 1 else "")
    print(f"model: {members}{model_config.cell} x{model_config.num_layers}, hidden {model_config.hidden_size}, "
          f"{params:,} parameters, engine {model.engine}, on {device}"
          f"{'' if train_config.precision == 'fp32' else ' in ' + train_config.precision}"
          f"{f', {world} processes' if world > 1 else ''}")
