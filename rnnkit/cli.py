"""The ``rnnkit`` command line."""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .models.language_model import CELL_NETWORKS

__all__ = ["main"]


def _demo(args) -> int:
    """Delayed recall: read a symbol, wait ``delay`` steps, say it again.

    The vanishing-gradient story in seconds: to learn the task, the error signal
    must travel back ``delay`` steps; an Elman RNN's gradient shrinks along the way,
    so it stops learning as the delay grows, while gated cells keep a path open.
    The summary line is computed from the measured accuracies.
    """
    from tqdm import tqdm

    import rnnkit
    from rnnkit.readouts import CategoricalReadout

    torch.manual_seed(args.seed)
    symbols, steps = 4, args.delay + 1

    def batch(size):
        first = torch.randint(symbols, (size,))
        x = torch.zeros(size, steps, symbols + 1)
        x[:, 0, :symbols] = torch.nn.functional.one_hot(first, symbols).float()
        x[:, 1:, symbols] = torch.randn(size, steps - 1)            # distracting noise
        return x, first

    print(f"delayed recall of 1 of {symbols} symbols after {args.delay} noisy steps "
          f"(chance accuracy {1 / symbols:.0%}); {args.steps} Adam steps per model")
    results = {}
    for name, cls in [("elman", rnnkit.ElmanRNN), ("gated", rnnkit.GatedRNN),
                      ("gru", rnnkit.GRU), ("lstm", rnnkit.LSTM)]:
        rnn, readout = cls(symbols + 1, args.hidden_size), CategoricalReadout(args.hidden_size, symbols)
        params = list(rnn.parameters()) + list(readout.parameters())
        opt = torch.optim.Adam(params, lr=args.lr)
        start = time.perf_counter()
        bar = tqdm(range(args.steps), desc=f"{name:5} ({rnn.engine})", leave=False, disable=True if args.quiet else None)
        for _ in bar:
            x, first = batch(64)
            out, _ = rnn(x)
            loss = -readout.log_prob(first, out[:, -1]).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        with torch.no_grad():
            x, first = batch(1000)
            out, _ = rnn(x)
            accuracy = (readout.logits(out[:, -1]).argmax(-1) == first).float().mean().item()
        results[name] = accuracy
        print(f"  {name:6} engine={rnn.engine:6} test accuracy {accuracy:6.1%}  "
              f"({time.perf_counter() - start:4.1f} s)")
    solved = [n for n, a in results.items() if a >= 0.95]
    unsolved = [n for n, a in results.items() if a < 0.95]
    print(f"solved (>= 95%): {', '.join(solved) or 'none'}; not solved: {', '.join(unsolved) or 'none'}"
          f" -- try --delay 10 and --delay 60 to see where each cell gives up")
    return 0


def _load_corpus(data: str | None) -> tuple[str, str]:
    from .data import default_corpus, describe_default_corpus, read_text

    if data is None:
        return default_corpus(), describe_default_corpus()
    text = read_text(data)
    where = "standard input" if data == "-" else f"'{data}'"
    return text, f"{len(text):,} characters from {where}"


def _saved_data(config: dict) -> tuple[str | None, float]:
    """(data path, validation fraction) of a checkpoint's config. Runs saved by rnnkit before the
    fraction was recorded hold the path alone; they used the default fraction, 0.1."""
    saved = config.get("data")
    if isinstance(saved, dict):
        return saved.get("path"), saved.get("validation_fraction", 0.1)
    return saved, 0.1


def _train(args) -> int:
    from .data import Vocabulary, split_train_validation
    from .models import LanguageModel, LanguageModelConfig, bits_per_token
    from .train import TrainConfig, Trainer, TrainingDiverged, read_checkpoint
    from .train.distributed import is_main, setup, teardown

    out = Path(args.out)
    if args.resume:
        _, saved, _ = read_checkpoint(out, "latest")
        vocab = Vocabulary.from_dict(saved["vocabulary"])
        model_config = LanguageModelConfig.from_dict(saved["model"])
        train_values = dict(saved["training"])
        for limit in ("max_minutes", "max_epochs", "max_steps"):   # limits may be extended
            if getattr(args, limit) is not None:
                train_values[limit] = getattr(args, limit)
        train_config = TrainConfig.from_dict(train_values)
        data, validation_fraction = _saved_data(saved)                 # the same split as before
    else:
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"'{out}' already holds files; pass --resume to continue that run, or "
                             f"--out NEW_DIRECTORY to start another")
        data, validation_fraction = args.data, args.validation_fraction
        model_config = None
        train_config = TrainConfig(
            batch_size=args.batch_size, truncation=args.truncation, optimizer=args.optimizer, lr=args.lr,
            weight_decay=args.weight_decay, clip_norm=args.clip_norm or None, clip_value=args.clip_value,
            information_flow=args.information_flow, recurrent_init=args.recurrent_init,
            recurrent_gain=args.recurrent_gain, schedule=args.schedule, warmup=args.warmup, max_minutes=args.max_minutes,
            max_epochs=args.max_epochs, max_steps=args.max_steps, eval_every=args.eval_every,
            early_stopping=args.early_stopping, seed=args.seed)
    text, description = _load_corpus(data)
    rank, world, device = setup()
    if args.resume:
        ids = torch.tensor(vocab.encode(text), dtype=torch.long)
    else:
        vocab = Vocabulary.build(text, level=args.level)
        ids = torch.tensor(vocab.encode(text), dtype=torch.long)
        model_config = LanguageModelConfig(
            vocab_size=len(vocab), cell=args.cell, hidden_size=args.hidden_size,
            num_layers=args.num_layers, embedding_size=args.embedding_size, dropout=args.dropout,
            tie_weights=args.tie_weights)
    train_ids, validation_ids = split_train_validation(ids, validation_fraction)
    torch.manual_seed(train_config.seed)
    model = LanguageModel(model_config)
    if is_main():
        print(f"corpus: {description}; {len(vocab)} {vocab.level} tokens in the vocabulary; "
              f"{len(train_ids):,} for training, {len(validation_ids):,} for validation")
        params = sum(p.numel() for p in model.parameters())
        print(f"model: {model_config.cell} x{model_config.num_layers}, hidden {model_config.hidden_size}, "
              f"{params:,} parameters, engine {model.rnn.engine}, on {device}"
              f"{f', {world} processes' if world > 1 else ''}")
    trainer = Trainer(model, train_config, out, progress=not args.quiet,
                      checkpoint_config={"model": model_config.to_dict(), "vocabulary": vocab.to_dict(),
                                         "data": {"path": data, "validation_fraction": validation_fraction},
                                         "rnnkit_version": __version__})
    try:
        summary = trainer.fit(train_ids, validation_ids, resume=args.resume)
    except TrainingDiverged as error:
        print(f"rnnkit: training stopped: {error}", file=sys.stderr)
        return 1
    finally:
        teardown()
    if is_main():
        loss = summary["validation_loss"]
        print(f"\nvalidation loss {loss:.4f} nats/{vocab.level} (perplexity {math.exp(loss):.2f}, "
              f"{bits_per_token(loss):.3f} bits/{vocab.level}) after {summary['steps']:,} steps, "
              f"{summary['tokens']:,} tokens, {summary['seconds']:.0f} s "
              f"({summary['tokens_per_second'] / 1e3:.1f}k tokens/s)")
        print(f"run directory: {out}")
        if summary["plot"]:
            print(f"loss plot:     {summary['plot']}")
        else:
            print("loss plot:     not written (pip install 'rnnkit[plot]' for matplotlib)")
        print(f"sample from it: rnnkit sample {shlex.quote(str(out))} --length 500")
    return 0


def _sample(args) -> int:
    from .generate import stream
    from .models import load_language_model

    model, vocab, _ = load_language_model(args.run_dir, args.checkpoint)
    # stream() checks the options and the prime when called, before anything is printed
    pieces = stream(model, vocab, args.prime, length=args.length, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, greedy=args.greedy, seed=args.seed)
    sys.stdout.write(args.prime)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _evaluate(args) -> int:
    from .data import read_text
    from .models import bits_per_token, load_language_model

    model, vocab, _ = load_language_model(args.run_dir, args.checkpoint)
    ids = torch.tensor(vocab.encode(read_text(args.data)), dtype=torch.long)
    if len(ids) < 2:
        raise ValueError(f"'{args.data}' holds {len(ids)} token(s); evaluation needs at least 2")
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for start in range(0, len(ids) - 1, 4096):
            chunk = ids[start: start + 4097].unsqueeze(0)
            loss, state = model.loss(chunk[:, :-1], chunk[:, 1:], state)
            total += loss.item() * (chunk.shape[1] - 1)
            count += chunk.shape[1] - 1
    loss = total / count
    unknown = sum(1 for i in ids.tolist() if i == vocab.unk_id)
    print(f"{count:,} {vocab.level} tokens: loss {loss:.4f} nats/{vocab.level}, perplexity "
          f"{math.exp(loss):.3f}, {bits_per_token(loss):.4f} bits/{vocab.level}"
          + (f" ({unknown:,} unknown tokens counted as <unk>)" if unknown else ""))
    return 0


def _inspect(args) -> int:
    """Look inside a trained language model: gradient flow through time, the spectra of its step
    Jacobians, the LSTM's forget gates, the path of its hidden state and the units that track
    features of the text. Runs the model (in float64) on the run's own validation text, or on
    --data, after a warm-up of --warmup tokens, and writes PNGs and a summary.json into
    RUN_DIR/inspect (or --out)."""
    import json

    from tqdm import tqdm

    from .analysis import plots
    from .analysis.gradients import gradient_decay_rate, gradient_flow
    from .analysis.hidden import hidden_pca, hidden_states, text_features, unit_responses
    from .analysis.jacobians import (forget_gate_product, jacobian_products, jacobian_spectrum,
                                     recurrent_eigenvalues, step_jacobians)
    from .cells import LSTMCell
    from .data import read_text, split_train_validation
    from .layers import Recurrent
    from .models import load_language_model

    if args.jacobian_steps < 1:
        raise ValueError(f"--jacobian-steps must be at least 1, got {args.jacobian_steps}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be at least 0, got {args.warmup}")
    run_dir = Path(args.run_dir)
    model, vocab, config = load_language_model(run_dir, args.checkpoint)
    model = model.double()
    layers = [m for m in model.modules() if isinstance(m, Recurrent)]
    if not 0 <= args.layer < len(layers):
        raise ValueError(f"--layer must be in [0, {len(layers)}) for this {len(layers)}-layer model, got {args.layer}")
    if args.data is not None:
        ids, where = vocab.encode(read_text(args.data)), f"'{args.data}'"
    else:
        path, fraction = _saved_data(config)
        text, _ = _load_corpus(path)
        _, ids = split_train_validation(vocab.encode(text), fraction)
        where = "the run's validation text"
    if len(ids) < 3:
        raise ValueError(f"{where} holds {len(ids)} token(s); inspect needs at least 3")
    # the model first reads `warmup` tokens, so the analysis starts from a state in use, not from zeros;
    # on a short text the warm-up gives way to the analysed length
    warmup = min(args.warmup, max(0, len(ids) - args.length - 1))
    state = None
    if warmup:
        with torch.no_grad():
            _, state = model(torch.tensor(ids[:warmup]).unsqueeze(0))
    ids = torch.tensor(ids[warmup: warmup + args.length + 1], dtype=torch.long).unsqueeze(0)   # (1, T + 1)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    tokens = [vocab.id_to_token(i) for i in inputs[0].tolist()]
    steps, cell = inputs.shape[1], layers[args.layer].cell
    out = Path(args.out) if args.out else run_dir / "inspect"
    out.mkdir(parents=True, exist_ok=True)
    name = f"{config['model']['cell']} layer {args.layer}"
    written, summary = {}, {"layer": args.layer, "tokens": steps, "warmup": warmup, "text": where}
    stages = ["gradient flow", "step Jacobians", "hidden states"]
    bar = tqdm(stages, desc="inspect", leave=False, disable=True if args.quiet else None)
    try:
        for stage in bar:
            bar.set_postfix_str(stage)
            if stage == "gradient flow":
                flow = gradient_flow(model, inputs, targets=targets, state=state, layer=args.layer)
                plots.plot_gradient_flow(flow, out / "gradient-flow.png", title=f"Gradient flow: {name}, {steps} tokens")
                written["gradient flow"] = out / "gradient-flow.png"
                summary["gradient_norm_first"] = float(flow.norms[0, 0])
                summary["gradient_norm_last"] = float(flow.norms[0, -1])
                try:
                    summary["last_step_decay_rate"] = gradient_decay_rate(flow)
                except ValueError:                              # vanished to exactly 0 somewhere
                    summary["last_step_decay_rate"] = None
            elif stage == "step Jacobians":
                span = min(steps, args.jacobian_steps)
                jac = step_jacobians(model, inputs[:, :span], state=state, layer=args.layer)
                spectrum = jacobian_spectrum(jac)
                weights = recurrent_eigenvalues(cell)
                plots.plot_spectrum(spectrum, out / "spectrum.png", weights=weights,
                                    title=f"Step Jacobians of {name}, first {span} tokens")
                plots.plot_jacobian_products(jacobian_products(jac), out / "jacobian-products.png",
                                             title=f"Singular values of ∂s_T/∂s_k: {name}, {span} tokens")
                written["spectrum"], written["jacobian products"] = out / "spectrum.png", out / "jacobian-products.png"
                summary["median_spectral_radius"] = float(spectrum.spectral_radius.median())
                summary["median_jacobian_norm"] = float(spectrum.largest_singular_value.median())
                summary["weight_spectral_radius"] = {k: float(v.abs().max()) for k, v in weights.items()}
                if isinstance(cell, LSTMCell):
                    gates = forget_gate_product(model, inputs, state=state, layer=args.layer)
                    plots.plot_forget_gates(gates, out / "forget-gates.png", title=f"Forget gates of {name}")
                    written["forget gates"] = out / "forget-gates.png"
                    summary["median_forget_gate"] = float(gates.gates.median())
            else:
                hidden = hidden_states(model, inputs, state=state, layer=args.layer)
                # standardised, so that a few integrating LSTM cells c do not fill the first components
                pca = hidden_pca(hidden, num_components=min(3, hidden.states.shape[-1], steps), standardize=True)
                plots.plot_pca_trajectory(pca, out / "pca.png", annotations=tokens,
                                          title=f"State of {name} over {steps} tokens (units standardised)")
                written["PCA trajectory"] = out / "pca.png"
                summary["explained_variance_ratio"] = pca.explained_variance_ratio.tolist()
                # character features; one that is constant in this text (no string, say) says nothing
                chars = [t if len(t) == 1 else "\ufffd" for t in tokens]     # '<unk>' and the like
                features = {k: v.unsqueeze(0) for k, v in text_features(chars).items()
                            if v.min() < v.max()} if vocab.level == "char" else {}
                if features:
                    responses = unit_responses(hidden, features)
                    plots.plot_unit_responses(responses, hidden, features, out / "units.png", text=tokens,
                                              steps=min(steps, 200))
                    written["unit responses"] = out / "units.png"
                    summary["units"] = responses.describe()
    except ImportError as error:                        # matplotlib missing: say how to get it
        raise ValueError(str(error)) from error
    finally:
        bar.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rate = summary["last_step_decay_rate"]
    print(f"inspected {run_dir} ({name}, hidden {config['model']['hidden_size']}) on {steps} tokens of {where}"
          + (f", after {warmup} tokens of warm-up" if warmup else ""))
    print(f"  gradient flow: |dL/ds_t| is {summary['gradient_norm_first']:.3g} at t = 0 and "
          f"{summary['gradient_norm_last']:.3g} at t = {steps}"
          + (f"; the last step's gradient changes by x{rate:.3f} per step back" if rate else ""))
    radii = ", ".join(f"{k} {v:.2f}" for k, v in summary["weight_spectral_radius"].items())
    print(f"  step Jacobians: median spectral radius {summary['median_spectral_radius']:.3f}, median norm "
          f"{summary['median_jacobian_norm']:.3f}; recurrent weights' spectral radius: {radii}")
    print("  state: its principal components (units standardised) explain "
          + ", ".join(f"{100 * r:.0f}%" for r in summary["explained_variance_ratio"]) + " of the variance")
    for line in summary.get("units", []):
        print(f"  units tracking {line}")
    print("plots:")
    for label, path in written.items():
        print(f"  {label + ':':19} {path}")
    print(f"  {'numbers:':19} {out / 'summary.json'}")
    return 0


def _bench_tasks(args) -> int:
    from .benchmark import SUITE, format_table, run_suite

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
        description="Train a character (or word) language model with truncated backpropagation through "
                    "time. With no --data it trains on a fixed selection of Python's own standard-library "
                    "source, which every Python installation has.")
    data = train.add_argument_group("data")
    data.add_argument("--data", metavar="PATH", help="UTF-8 text file, directory of them, or - for stdin "
                      "(default: the built-in corpus)")
    data.add_argument("--level", choices=["char", "word"], default="char", help="tokens (default char)")
    data.add_argument("--validation-fraction", type=float, default=0.1,
                      help="last fraction of the corpus held out (default 0.1)")
    model = train.add_argument_group("model")
    model.add_argument("--cell", default="lstm", choices=sorted(CELL_NETWORKS), help="recurrent cell (default lstm)")
    model.add_argument("--hidden-size", type=int, default=256, help="hidden units per layer (default 256)")
    model.add_argument("--num-layers", type=int, default=1, help="stacked layers (default 1)")
    model.add_argument("--embedding-size", type=int, default=64, help="token embedding size (default 64)")
    model.add_argument("--dropout", type=float, default=0.0, help="dropout probability (default 0)")
    model.add_argument("--tie-weights", action="store_true", help="share embedding and readout weights")
    opt = train.add_argument_group("optimisation")
    opt.add_argument("--truncation", type=int, default=64, help="BPTT steps per chunk (default 64)")
    opt.add_argument("--batch-size", type=int, default=32, help="parallel streams per process (default 32)")
    opt.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    opt.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (default 1e-2)")
    opt.add_argument("--weight-decay", type=float, default=0.0)
    opt.add_argument("--schedule", choices=["cosine", "plateau", "constant"], default="cosine",
                     help="learning-rate schedule (default cosine over the run)")
    opt.add_argument("--warmup", type=float, default=0.02, help="warm-up fraction of the run (default 0.02)")
    opt.add_argument("--clip-norm", type=float, default=1.0, help="global gradient-norm clip, 0 = off (default 1)")
    opt.add_argument("--clip-value", type=float, default=None, help="element-wise gradient clip (default off)")
    opt.add_argument("--information-flow", type=float, default=0.0, metavar="WEIGHT",
                     help="weight of Pascanu et al.'s regularizer keeping gradient norms equal across steps "
                          "(default 0 = off; runs the recurrence on the slower loop engine)")
    opt.add_argument("--recurrent-init", choices=["orthogonal", "identity"], default=None,
                     help="re-initialise every recurrent gate block (default: the cell's own init)")
    opt.add_argument("--recurrent-gain", type=float, default=1.0, help="scale of --recurrent-init (default 1)")
    run = train.add_argument_group("run")
    run.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget (default 2)")
    run.add_argument("--max-epochs", type=float, default=None, help="passes over the training text")
    run.add_argument("--max-steps", type=int, default=None, help="optimizer steps")
    run.add_argument("--eval-every", type=int, default=500, help="steps between validations (default 500)")
    run.add_argument("--early-stopping", type=int, default=None, metavar="N",
                     help="stop after N validations without improvement")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--out", default="runs/lm", help="run directory (default runs/lm)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)

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
    sample.set_defaults(run=_sample)

    evaluate = commands.add_parser("evaluate", help="loss, perplexity and bits per token on a text",
                                   description="Evaluate a trained language model on a text.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--data", required=True, metavar="PATH", help="text file, directory, or -")
    evaluate.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    evaluate.set_defaults(run=_evaluate)

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
                 "batch_size", "length", "eval_every", "max_steps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.command == "train" and not args.resume and args.max_minutes is None \
            and args.max_epochs is None and args.max_steps is None:
        args.max_minutes = 2.0
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"rnnkit {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
