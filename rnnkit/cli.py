"""The ``rnnkit`` command line."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from . import __version__
from ._arguments import check_int, check_number, check_positive
from .models.language_model import CELL_NETWORKS
from .train.distributed import DEVICES
from .train.recipes import PRESETS

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import delayed_recall

    return delayed_recall(args)


def _train(args) -> int:
    from .data import Vocabulary, describe_default_corpus
    from .data.tokens import TokenFile, is_token_file
    from .models import LanguageModelConfig, build_language_model
    from .train import TrainConfig, Trainer, TrainingDiverged, read_checkpoint
    from .train import lm_run
    from .train.distributed import is_main, mixed_precision, setup, share_from_main, teardown
    from .train.recipes import describe_preset, preset_values

    out = Path(args.out)
    given = {name for name in lm_run.DEFAULTS if getattr(args, name, None) is not None}
    rank, world, device = setup(args.device, option="--device")
    main_process = is_main()                     # asked now: after teardown every process looks like rank 0
    try:
        if args.resume:
            _, saved, _ = read_checkpoint(out, "latest")
            vocab = Vocabulary.from_dict(saved["vocabulary"])
            lm_run.resolve(args, None)
            if args.preset is not None and args.preset != saved.get("preset"):
                raise ValueError(f"--preset {args.preset} differs from this run's "
                                 f"{saved.get('preset') or 'no preset'}: a resumed run keeps its settings; "
                                 f"drop --preset")
            lm_run.check_resume(given, args, saved)
            model_config = LanguageModelConfig.from_dict(saved["model"])
            train_values = dict(saved["training"])
            for name in lm_run.RESUMABLE:                 # limits may be extended, the learning rate changed
                asked = name in given if name == "lr" else getattr(args, name) is not None   # limits: no defaults
                if asked and getattr(args, name) != train_values.get(name):
                    if name == "lr" and main_process:
                        print(f"resuming with --lr {args.lr:g} (the run had {train_values['lr']:g}); the "
                              f"schedule continues from its step with it, and the next checkpoint records it")
                    train_values[name] = getattr(args, name)
            train_config = TrainConfig.from_dict(train_values)
            record = lm_run.saved_data_record(saved)
            files = share_from_main(lambda: lm_run.find_files(record, vocab, cache=args.cache_dir,
                                                              progress=not args.quiet))
        else:
            if out.exists() and not out.is_dir():
                raise ValueError(f"--out '{out}' is a file; --out names the run's directory")
            if args.seed is not None:
                check_int("", "--seed", args.seed, 0, maximum=2 ** 63 - 1)
            if out.exists() and any(out.iterdir()):
                raise ValueError(f"'{out}' already holds files; pass --resume to continue that run, or "
                                 f"--out NEW_DIRECTORY to start another")
            preset = preset_values(args.preset) if args.preset else None
            if args.level is None and args.data not in (None, "-") and is_token_file(args.data):
                args.level = TokenFile(args.data).level           # a prepared file knows its level
            lm_run.resolve(args, preset)
            if args.preset and is_main():
                print(describe_preset(args.preset, overridden=given & set(preset)))
            record = lm_run.data_record(args)
            files = share_from_main(lambda: lm_run.prepare_files(record, cache=args.cache_dir,
                                                                 progress=not args.quiet))
            if args.max_minutes is None and args.max_epochs is None and args.max_steps is None:
                args.max_minutes = 2.0
            train_config = TrainConfig(
                batch_size=args.batch_size, truncation=args.truncation, optimizer=args.optimizer, lr=args.lr,
                momentum=args.momentum, weight_decay=args.weight_decay, clip_norm=args.clip_norm or None,
                clip_value=args.clip_value, information_flow=args.information_flow, unk_noise=args.unk_noise,
                recurrent_init=args.recurrent_init, recurrent_gain=args.recurrent_gain, schedule=args.schedule,
                cycles=args.cycles, warmup=args.warmup, decay_start=args.decay_start, decay_factor=args.decay_factor,
                nonmono=args.nonmono, max_minutes=args.max_minutes, max_epochs=args.max_epochs,
                max_steps=args.max_steps, eval_every=args.eval_every, eval_tokens=args.eval_tokens or None,
                early_stopping=args.early_stopping, seed=args.seed, precision=args.precision)
            model_config = None
        mixed_precision(device, train_config.precision)        # a precision this device lacks: refused now
        record["files"] = files
        splits, vocab = lm_run.load(files)
        if model_config is None:
            model_config = LanguageModelConfig(
                vocab_size=len(vocab), **{name: getattr(args, name) for name in lm_run.MODEL_OPTIONS})
        torch.manual_seed(train_config.seed)
        try:
            model = build_language_model(model_config)
        except (MemoryError, RuntimeError) as error:
            if not isinstance(error, MemoryError) and "allocate" not in str(error):
                raise
            with torch.device("meta"):                       # counted without memory
                parameters = sum(p.numel() for p in build_language_model(model_config).parameters())
            raise ValueError(f"the model does not fit in memory ({parameters:,} parameters, "
                             f"{4 * parameters / 2 ** 30:,.1f} GiB in float32); choose a smaller --hidden-size, "
                             f"--embedding-size or --num-layers"
                             + (", or fewer --members or --snapshots" if model_config.models > 1 else "")) from None
        if is_main():
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
        loggers = []
        if args.tensorboard is not None and is_main():
            from .train import TensorBoardLogger

            loggers.append(TensorBoardLogger(args.tensorboard or Path(out) / "tensorboard"))
        trainer = Trainer(model, train_config, out, progress=not args.quiet, loggers=loggers, device=device,
                          checkpoint_config={"model": model_config.to_dict(), "vocabulary": vocab.to_dict(),
                                             "data": record, "preset": args.preset,
                                             "rnnkit_version": __version__})
        try:
            summary = trainer.fit(splits["train"], splits["validation"], test=splits["test"],
                                  resume=args.resume)
        except TrainingDiverged as error:
            print(f"rnnkit: training stopped: {error}", file=sys.stderr)
            return 1
    finally:
        teardown()
    if main_process:
        preset = saved.get("preset") if args.resume else args.preset
        interrupted = str(summary["stopped_by"]).startswith("interrupted")       # Ctrl-C: no extra work
        if lm_run.wants_cache(args.neural_cache, vocab.level, preset) and splits["test"] is not None \
                and not interrupted:
            summary["cache"] = lm_run.cache_report(out, splits, train_config, device)
        lm_run.print_summary(summary, splits, vocab, out)
    if str(summary["stopped_by"]).startswith("interrupted"):
        if main_process:
            print(f"{summary['stopped_by']} at step {summary['steps']:,}; the checkpoint is saved; continue with: "
                  f"rnnkit train --resume --out {shlex.quote(str(out))}")
        return 130
    return 0


def _prepare(args) -> int:
    import time as _time

    from .train import lm_run

    lm_run.resolve(args, None)
    record = lm_run.data_record(args)
    split = lm_run._main_split(record)
    from .data.tokens import prepare

    started = _time.perf_counter()
    tokens = prepare(args.data, level=args.level, split=split, min_count=args.min_count,
                     max_vocab=args.max_vocab, out=args.out, cache=args.cache_dir, progress=not args.quiet)
    print(f"{tokens.describe()}; in {_time.perf_counter() - started:.1f} s")
    print(f"token file: {tokens.path}")
    print(f"train on it: rnnkit train --data {shlex.quote(str(tokens.path))}")
    return 0


def _sample(args) -> int:
    from .generate import stream
    from .models import load_language_model

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
    model, vocab, _ = load_language_model(args.run_dir, args.checkpoint, device=_device(args))
    # stream() checks the options and the prime when called, before anything is printed
    pieces = stream(model, vocab, args.prime, length=args.length, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, greedy=args.greedy, seed=args.seed)
    sys.stdout.write(args.prime)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _export(args) -> int:
    """Write a trained language model as an ONNX program that takes any batch and length."""
    import warnings

    from .models import load_language_model

    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise ValueError("exporting to ONNX needs the onnx and onnxscript packages: "
                         "pip install 'rnnkit[export]'") from None
    model, vocab, _ = load_language_model(args.run_dir, args.checkpoint)
    model.eval()
    out = Path(args.out) if args.out else Path(args.run_dir) / "model.onnx"
    example = torch.zeros(2, 8, dtype=torch.long)
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("time")},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=dims, verbose=False)
    program.save(str(out))
    states = "h" if model.config.cell != "lstm" else "h and c"
    if hasattr(model, "live"):                 # an ensemble: its members, or its snapshots so far
        count, noun = len(model.live()), "member" if model.cycles is None else "snapshot"
        outputs = (f"log-probabilities (batch, time, {len(vocab):,}) of the mean of its {count} {noun}"
                   f"{'s' if count > 1 else ''} and each {noun}'s final state")
    else:
        outputs = f"logits (batch, time, {len(vocab):,}) and the final state"
    print(f"wrote {out}: input token ids (batch, time) int64 from a {len(vocab):,}-token {vocab.level} "
          f"vocabulary; outputs {outputs} ({states}, (layers, batch, hidden) each), starting from zeros")
    return 0


def _evaluate(args) -> int:
    from .evaluate_run import evaluate_runs

    return evaluate_runs(args, _device(args))


def _inspect(args) -> int:
    from .analysis.inspect_run import inspect_run

    return inspect_run(args)


def _bench_tasks(args) -> int:
    from .task_suite import SUITE, format_table, run_suite

    suite = [entry for entry in SUITE if not args.task or entry[0] in args.task]
    if args.task:
        unknown = sorted(set(args.task) - {name for name, _, _ in SUITE})
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(n for n, _, _ in SUITE)}")
    if args.sizes:
        suite = [(name, arg, tuple(args.sizes) if arg else sizes) for name, arg, sizes in suite]
    cells = tuple(args.cells.split(","))
    unknown = sorted(set(cells) - set(CELL_NETWORKS))
    if unknown:
        raise ValueError(f"unknown cell(s) {unknown}; choose from {sorted(CELL_NETWORKS)}")
    runs = run_suite(suite, cells, seconds=args.seconds, hidden_size=args.hidden_size,
                     progress=None if args.quiet else print)
    print("\n" + format_table(runs))
    return 0


def _device(args) -> torch.device:
    from .train.distributed import choose_device

    return choose_device(args.device, option="--device")


def _int_list(text: str) -> list:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _add_data_options(parser, *, evaluation: bool, training: bool = True) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", metavar="PATH", help="UTF-8 text file, directory of them, - for stdin, or a "
                      "token file made by rnnkit prepare (default: the built-in corpus)")
    data.add_argument("--level", choices=["char", "word", "bpe"],
                      help="tokens: characters; words + <eos> per line (the Penn Treebank convention; a literal "
                           "<unk> is the unknown word); or byte-level BPE trained on the training part "
                           "(default char)")
    data.add_argument("--validation-fraction", type=float,
                      help="fraction of the text, after the training part, held out for validation (default 0.1)")
    data.add_argument("--test-fraction", type=float,
                      help="last fraction of the text held out for the final test, never used for any choice; "
                           "0 = none (default 0.1)")
    if training:
        data.add_argument("--validation-data", metavar="PATH", help="a separate validation text (then --data "
                          "is not split for validation)")
        data.add_argument("--test-data", metavar="PATH", help="a separate test text (then --data is not split "
                          "for testing)")
    data.add_argument("--min-count", type=int, help="word level: keep words seen at least this often (default 1)")
    data.add_argument("--max-vocab", type=int, help="cap the vocabulary size, specials included; the BPE size "
                      "(default: no cap; bpe 8192)")
    data.add_argument("--cache-dir", metavar="DIR", help="where token files are kept (default "
                      "$RNNKIT_CACHE_DIR, else ~/.cache/rnnkit)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent neural networks as state machines.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="train Elman, gated, GRU and LSTM cells on delayed recall (~20 s)",
                               description=_demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--delay", type=int, default=30, help="steps between the symbol and its recall (default 30)")
    demo.add_argument("--steps", type=int, default=600, help="training steps per model (default 600)")
    demo.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    demo.add_argument("--hidden-size", type=int, default=32, help="hidden units (default 32)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)

    train = commands.add_parser(
        "train", help="train a language model on a text corpus",
        description="Train a character, word or BPE language model with truncated backpropagation through "
                    "time. With no --data it trains on a fixed selection of Python's own standard-library "
                    "source, which every Python installation has. The text is tokenized once into a token "
                    "file (cached; see rnnkit prepare) and read in place. Defaults marked * depend on "
                    "--level (word: 2 tied layers of 128 with dropout 0.4, embedding dropout 0.1, weight drop 0.2, AR 1, "
                    "TAR 1, unk noise 0.5, batch 20 x 35; bpe: 8192 tokens, a tied 512-unit layer, dropout 0.25).",
        epilog="presets (--preset): " + "; ".join(f"{name}: {entry['about']}" for name, entry in PRESETS.items()))
    _add_data_options(train, evaluation=False)
    train.add_argument("--preset", choices=sorted(PRESETS), help="a published recipe (Zaremba et al. 2014, "
                       "AWD-LSTM); options given on the command line win over it, and it prints what it sets")
    model = train.add_argument_group("model")
    model.add_argument("--cell", choices=sorted(CELL_NETWORKS), help="recurrent cell (default lstm)")
    model.add_argument("--hidden-size", type=int, help="hidden units per layer (default 256*)")
    model.add_argument("--num-layers", type=int, help="stacked layers (default 1*)")
    model.add_argument("--embedding-size", type=int, help="token embedding size (default 64*)")
    model.add_argument("--dropout", type=float, help="dropout on the last layer's output, and by default on the "
                       "embeddings and between layers (default 0*)")
    model.add_argument("--input-dropout", type=float, help="dropout on the embeddings (default: --dropout)")
    model.add_argument("--layer-dropout", type=float, help="dropout between layers (default: --dropout)")
    model.add_argument("--locked-dropout", action="store_true", default=None,
                       help="one dropout mask per sequence on inputs, between layers and on outputs, the same "
                            "at every step (AWD-LSTM's variational dropout), not a new one at each step")
    model.add_argument("--embedding-dropout", type=float, help="drop whole words from the embedding (default 0*)")
    model.add_argument("--weight-drop", type=float, help="DropConnect on the recurrent weights (default 0*)")
    model.add_argument("--unk-noise", type=float, metavar="ALPHA", help="train with a word seen c times read "
                       "and predicted as <unk> with probability ALPHA/(ALPHA+c), so that the model learns how often "
                       "unseen words come; 0 = off (default 0*)")
    model.add_argument("--activation-penalty", type=float, metavar="ALPHA",
                       help="AR: ALPHA x mean squared output activation (default 0*)")
    model.add_argument("--temporal-penalty", type=float, metavar="BETA",
                       help="TAR: BETA x mean squared change of the output between steps (default 0*)")
    model.add_argument("--tie-weights", action="store_true", default=None,
                       help="share embedding and readout weights (default off*)")
    model.add_argument("--no-tie-weights", dest="tie_weights", action="store_false", help=argparse.SUPPRESS)
    model.add_argument("--projection-size", type=int, help="project the last layer's output to this size "
                       "before the readout (default none)")
    model.add_argument("--softmax", choices=["full", "adaptive"],
                       help="full, or adaptive (Grave et al. 2017) for large vocabularies (default full)")
    model.add_argument("--cutoffs", type=_int_list, metavar="N,N,...",
                       help="adaptive softmax cluster boundaries (default 2000,10000,50000 below the vocabulary size)")
    model.add_argument("--init-scale", type=float, help="initialise every weight from U(-s, s) (default: each "
                       "module's own initialisation)")
    model.add_argument("--members", type=int, metavar="K", help="train K models of these settings side by side "
                       "as one ensemble: each learns as it would alone, and a token's probability is the mean of "
                       "theirs (default 1)")
    model.add_argument("--snapshots", type=int, metavar="K", help="a snapshot ensemble (Huang et al. 2017) at one "
                       "model's cost: the schedule restarts K times (--cycles K) and the model each cycle ends with "
                       "predicts with the others, the mean of their probabilities (default 1*)")
    opt = train.add_argument_group("optimisation")
    opt.add_argument("--truncation", type=int, help="BPTT steps per chunk (default 64*)")
    opt.add_argument("--batch-size", type=int, help="parallel streams per process (default 32*)")
    opt.add_argument("--optimizer", choices=["adam", "sgd", "ntasgd"],
                     help="adam, sgd, or ntasgd (SGD, then averaged once validation stalls; default adam)")
    opt.add_argument("--lr", type=float, help="peak learning rate (default 1e-2)")
    opt.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    opt.add_argument("--weight-decay", type=float, help="(default 0)")
    opt.add_argument("--schedule", choices=["cosine", "plateau", "constant", "step"],
                     help="learning-rate schedule: cosine over the run, halve on a plateau, constant, or step "
                          "(x --decay-factor each epoch from --decay-start on) (default cosine)")
    opt.add_argument("--cycles", type=int, metavar="N", help="cosine: restart the schedule N times, each cycle "
                     "from the peak rate down (SGDR; default 1, or --snapshots)")
    opt.add_argument("--warmup", type=float, help="warm-up fraction of the run, cosine (default 0.02)")
    opt.add_argument("--decay-start", type=int, help="step schedule: first epoch (counted from 1) at a "
                     "lower rate (default 1)")
    opt.add_argument("--decay-factor", type=float, help="step schedule: factor per epoch (default 0.5)")
    opt.add_argument("--nonmono", type=int, help="ntasgd: validations to look back (default 5)")
    opt.add_argument("--clip-norm", type=float, help="global gradient-norm clip, 0 = off (default 1)")
    opt.add_argument("--clip-value", type=float, help="element-wise gradient clip (default off)")
    opt.add_argument("--information-flow", type=float, metavar="WEIGHT",
                     help="weight of Pascanu et al.'s regularizer keeping gradient norms equal across steps "
                          "(default 0 = off; runs the recurrence on the slower loop engine)")
    opt.add_argument("--recurrent-init", choices=["orthogonal", "identity"],
                     help="re-initialise every recurrent gate block (default: the cell's own init)")
    opt.add_argument("--recurrent-gain", type=float, help="scale of --recurrent-init (default 1)")
    run = train.add_argument_group("run")
    run.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget (default 2)")
    run.add_argument("--max-epochs", type=float, default=None, help="passes over the training text")
    run.add_argument("--max-steps", type=int, default=None, help="optimizer steps")
    run.add_argument("--eval-every", type=int, help="steps between validations (default 500, word 200)")
    run.add_argument("--eval-tokens", type=int, help="tokens each evaluation scores at most, 0 = all "
                     "(default 50000; word 250000)")
    run.add_argument("--early-stopping", type=int, metavar="N",
                     help="stop after N validations without improvement")
    run.add_argument("--seed", type=int, help="random seed (default 0)")
    run.add_argument("--neural-cache", action=argparse.BooleanOptionalAction, help="also score the test text with "
                     "a neural cache (Grave et al. 2017) chosen on validation; kept for rnnkit evaluate (default: "
                     "on at word level without a preset)")
    run.add_argument("--out", default="runs/lm", help="run directory (default runs/lm)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint; "
                     "only --max-minutes/--max-epochs/--max-steps may change")
    run.add_argument("--tensorboard", nargs="?", const="", metavar="DIR",
                     help="also log to TensorBoard, in DIR (default OUT/tensorboard); needs "
                          "pip install 'rnnkit[tensorboard]'")
    run.add_argument("--device", choices=DEVICES, default="auto", help="where to train: auto (CUDA when torch "
                     "finds a GPU, each process its own under torchrun, else the CPU), cpu or cuda; a run may "
                     "resume on another device (default auto)")
    run.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="the forward pass and the loss in "
                     "float32, or under autocast in bfloat16 (CPU or GPU) or float16 (GPU only, with gradient "
                     "scaling); a resumed run keeps its precision (default fp32)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(run=_train)

    prepare_cmd = commands.add_parser(
        "prepare", help="tokenize a corpus once into a memory-mapped token file",
        description="Tokenize a text file, a directory of them or standard input into a token file (ids as "
                    "uint8/16/32, the vocabulary built on the training part, the parts' ranges), streamed in "
                    "blocks so that memory does not grow with the corpus. rnnkit train does this itself on "
                    "first use (into the cache); prepare it explicitly to choose where it goes.")
    _add_data_options(prepare_cmd, evaluation=False, training=False)
    prepare_cmd.add_argument("--out", metavar="DIR", help="the token file's folder (default: in the cache)")
    prepare_cmd.add_argument("--quiet", action="store_true", help="no progress bars")
    prepare_cmd.set_defaults(run=_prepare)

    sample = commands.add_parser("sample", help="generate text from a trained model",
                                 description="Stream text from a trained language model, token by token.")
    sample.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a training run")
    sample.add_argument("--prime", default="", help="text to start from")
    sample.add_argument("--length", type=int, default=500, help="tokens to generate (default 500)")
    sample.add_argument("--temperature", type=float, default=0.8, help="softmax temperature (default 0.8)")
    sample.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    sample.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1]")
    sample.add_argument("--greedy", action="store_true", help="always take the most likely token")
    sample.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")
    sample.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    sample.add_argument("--device", choices=DEVICES, default="cpu", help="cpu, cuda, or auto: CUDA when "
                        "torch finds a GPU (default cpu)")
    sample.set_defaults(run=_sample)

    evaluate = commands.add_parser(
        "evaluate", help="loss, perplexity and bits per character on a text",
        description="Evaluate a trained language model on a text: every token is predicted once (at word "
                    "level the first from <eos>, so that words + lines are scored, as papers count them), in "
                    "the run's batch of parallel rows with the state carried along each. Several runs trained "
                    "on the same text are evaluated as an ensemble: each token's probability is the mean of "
                    "theirs.")
    evaluate.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run's --out directory; several for "
                          "an ensemble")
    evaluate.add_argument("--data", required=True, metavar="PATH", help="text file, directory, or -")
    evaluate.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    evaluate.add_argument("--batch-size", type=int, help="parallel rows (default: the run's batch size)")
    evaluate.add_argument("--cache-dir", metavar="DIR", help="where token files are kept (default "
                          "$RNNKIT_CACHE_DIR or ~/.cache/rnnkit)")
    evaluate.add_argument("--device", choices=DEVICES, default="cpu", help="cpu, cuda, or auto: CUDA when "
                          "torch finds a GPU (default cpu)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(run=_evaluate)

    export = commands.add_parser(
        "export", help="write a trained language model as an ONNX program",
        description="Export a trained language model with torch's ONNX exporter: the program takes token "
                    "ids of any batch size and length and returns the logits and the final state "
                    "(onnxruntime runs it without torch or rnnkit). Needs pip install 'rnnkit[export]'.")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="the format (onnx)")
    export.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    export.add_argument("--out", metavar="PATH", help="where to write it (default RUN_DIR/model.onnx)")
    export.set_defaults(run=_export)

    inspect = commands.add_parser("inspect", help="plots of a trained model's gradient flow, Jacobians and hidden states",
                                  description=_inspect.__doc__)
    inspect.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a training run")
    inspect.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    inspect.add_argument("--data", metavar="PATH", help="text to run the model on (default: the run's validation text)")
    inspect.add_argument("--length", type=int, default=200, help="tokens to analyse (default 200)")
    inspect.add_argument("--warmup", type=int, default=100,
                         help="tokens the model reads first, so the analysis starts from a warm state (default 100)")
    inspect.add_argument("--jacobian-steps", type=int, default=30,
                         help="steps whose Jacobians and spectra are computed (default 30; the time grows as "
                              "steps x state size^3)")
    inspect.add_argument("--layer", type=int, default=0, help="which recurrent layer, 0 = the first (default 0)")
    inspect.add_argument("--out", metavar="DIR", help="where the plots go (default RUN_DIR/inspect)")
    inspect.add_argument("--quiet", action="store_true", help="no progress bar")
    inspect.set_defaults(run=_inspect)

    bench = commands.add_parser("bench", help="benchmark suites (see: rnnkit bench tasks --help)")
    suites = bench.add_subparsers(dest="suite", metavar="SUITE", required=True)
    tasks = suites.add_parser(
        "tasks", help="which cell solves which long-dependency task",
        description="Train Elman, gated, LSTM and GRU cells on the adding problem, the copy task, delayed "
                    "recall, parity and the row-by-row digits for a fixed budget each, and print who beats "
                    "the memoryless baseline at which length.")
    tasks.add_argument("--task", action="append", help="limit to this task (repeatable)")
    tasks.add_argument("--sizes", type=int, nargs="+", help="lengths/delays to try instead of the defaults")
    tasks.add_argument("--cells", default="elman,gated,lstm,gru", help="comma-separated cells")
    tasks.add_argument("--seconds", type=float, default=30.0, help="training budget per run (default 30)")
    tasks.add_argument("--hidden-size", type=int, default=64)
    tasks.add_argument("--quiet", action="store_true")
    tasks.set_defaults(run=_bench_tasks)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    for name in ("delay", "steps", "hidden_size", "num_layers", "embedding_size", "truncation",
                 "batch_size", "length", "eval_every", "max_steps", "min_count", "max_vocab", "decay_start",
                 "nonmono", "projection_size"):
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
        import errno

        fix = {errno.ENOSPC: "free some space, or write to another disk (--out, --cache-dir)",
               errno.EACCES: "choose a folder you can write to (--out, --cache-dir)",
               errno.EROFS: "choose a folder on a writable disk (--out, --cache-dir)",
               errno.ENOTDIR: "a path that should be a folder is a file"}.get(error.errno, "check the path")
        print(f"rnnkit {args.command}: error: {error}; {fix}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
