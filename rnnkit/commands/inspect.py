"""``rnnkit inspect``: look inside a trained language model and write what is seen as figures and a
summary (the analyses themselves are the functions of :mod:`rnnkit.analysis`)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from .._arguments import check_int
from ..analysis import plots
from ..analysis.gradients import gradient_decay_rate, gradient_flow
from ..analysis.hidden import hidden_pca, hidden_states, text_features, unit_responses
from ..analysis.jacobians import (forget_gate_product, jacobian_products, jacobian_spectrum, recurrent_eigenvalues,
                                  step_jacobians)
from ..cells import LSTMCell
from ..data.tokens import prepare
from ..layers import Recurrent
from ..models import load_language_model
from ..train.lm_run import find_files, load, saved_data_record

HELP = "plots of a trained model's gradient flow, Jacobians and hidden states"
DESCRIPTION = ("Look inside a trained language model: gradient flow through time, the spectra of its step Jacobians, "
               "the LSTM's forget gates, the path of its hidden state and the units that track features of the text, "
               "on the run's validation text or --data, written as PNGs and a summary.json into RUN_DIR/inspect.")
AT_LEAST_ONE = ("length",)


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a training run")
    parser.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    parser.add_argument("--data", metavar="PATH", help="text to run the model on (default: the run's validation text)")
    parser.add_argument("--length", type=int, default=200, help="tokens to analyse (default 200)")
    parser.add_argument("--warmup", type=int, default=100,
                        help="tokens the model reads first, so the analysis starts from a warm state (default 100)")
    parser.add_argument("--jacobian-steps", type=int, default=30,
                        help="steps whose Jacobians and spectra are computed (default 30; the time grows as "
                             "steps x state size^3)")
    parser.add_argument("--layer", type=int, default=0, help="which recurrent layer, 0 = the first (default 0)")
    parser.add_argument("--out", metavar="DIR", help="where the plots go (default RUN_DIR/inspect)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    """Look inside a trained language model: gradient flow through time, the spectra of its step
    Jacobians, the LSTM's forget gates, the path of its hidden state and the units that track
    features of the text. Runs the model (in float64) on the run's own validation text, or on
    --data, after a warm-up of --warmup tokens, and writes PNGs and a summary.json into
    RUN_DIR/inspect (or --out)."""
    check_int("", "--jacobian-steps", args.jacobian_steps)
    check_int("", "--warmup", args.warmup, 0)
    run_dir = Path(args.run_dir)
    model, vocab, config = load_language_model(run_dir, args.checkpoint)
    model = model.double()
    which = ""
    if hasattr(model, "live"):             # an ensemble: one member, a language model of its own
        live = model.live()
        if model.cycles is None:
            which, model = f"member 1 of {len(live)}, ", live[0]
        else:                              # of snapshots, the newest: the one trained longest
            which, model = f"snapshot {len(live)} of {model.config.snapshots}, ", live[-1]
    layers = [m for m in model.modules() if isinstance(m, Recurrent)]
    check_int("", "--layer", args.layer, 0, f"this is a {len(layers)}-layer model", maximum=len(layers) - 1)
    limit = args.warmup + args.length + 1
    if args.data is not None:
        text = prepare(args.data, level=vocab.level, split=(("text", 1.0),), vocab=vocab,
                       progress=not args.quiet).parts["text"]
        ids, where = text.tokens[:limit].tolist(), f"'{args.data}'"
    else:
        splits, _ = load(find_files(saved_data_record(config), vocab, progress=not args.quiet))
        ids, where = splits["validation"].tokens[:limit].tolist(), "the run's validation text"
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
    name = which + f"{config['model']['cell']} layer {args.layer}"
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
