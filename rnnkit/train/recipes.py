"""Published recipes for word-level language models, as presets of ``rnnkit train``.

Each preset is a set of command-line values; an option given on the command line
wins over the preset. ``rnnkit train --preset NAME`` prints what it sets. Where rnnkit
cannot follow a paper exactly the preset says so in its ``differs`` line.

- ``zaremba-small``, ``zaremba-medium``, ``zaremba-large``: Zaremba, Sutskever & Vinyals
  (2014), "Recurrent neural network regularization" — two-layer LSTMs trained with
  plain SGD from U(-s, s), dropout on the non-recurrent connections, the learning rate
  constant for some epochs and then cut every epoch. Their Penn Treebank test
  perplexities: 114.5, 82.7, 78.4.
- ``awd-lstm``: Merity, Keskar & Socher (2018), "Regularizing and optimizing LSTM language
  models" — a three-layer LSTM with DropConnect on the recurrent weights, embedding
  dropout, tied weights, activation regularization (AR, TAR) and non-monotonically
  triggered averaged SGD. Penn Treebank test perplexity 57.3 (58.8 before fine-tuning).
"""
from __future__ import annotations

__all__ = ["PRESETS", "preset_values", "describe_preset"]

_ZAREMBA = {"level": "word", "cell": "lstm", "num_layers": 2, "optimizer": "sgd", "momentum": 0.0,
            "lr": 1.0, "schedule": "step", "batch_size": 20, "tie_weights": False, "warmup": 0.0,
            "unk_noise": 0.0}

PRESETS = {
    "zaremba-small": {
        "about": "Zaremba et al. 2014, small: 2 x 200 LSTM, no dropout (PTB test 114.5)",
        "values": {**_ZAREMBA, "hidden_size": 200, "embedding_size": 200, "dropout": 0.0, "init_scale": 0.1,
                   "clip_norm": 5.0, "truncation": 20, "decay_start": 4, "decay_factor": 0.5, "max_epochs": 13},
        "differs": None,
    },
    "zaremba-medium": {
        "about": "Zaremba et al. 2014, medium: 2 x 650 LSTM, dropout 0.5 (PTB test 82.7)",
        "values": {**_ZAREMBA, "hidden_size": 650, "embedding_size": 650, "dropout": 0.5, "init_scale": 0.05,
                   "clip_norm": 5.0, "truncation": 35, "decay_start": 6, "decay_factor": 0.8, "max_epochs": 39},
        "differs": None,
    },
    "zaremba-large": {
        "about": "Zaremba et al. 2014, large: 2 x 1500 LSTM, dropout 0.65 (PTB test 78.4)",
        "values": {**_ZAREMBA, "hidden_size": 1500, "embedding_size": 1500, "dropout": 0.65,
                   "init_scale": 0.04, "clip_norm": 10.0, "truncation": 35, "decay_start": 14,
                   "decay_factor": 1 / 1.15, "max_epochs": 55},
        "differs": None,
    },
    "awd-lstm": {
        "about": "Merity et al. 2018, AWD-LSTM: 3 x 1150 LSTM, weight drop 0.5, NT-ASGD (PTB test 57.3 "
                 "with fine-tuning, 58.8 without)",
        "values": {"level": "word", "cell": "lstm", "num_layers": 3, "hidden_size": 1150, "embedding_size": 400,
                   "projection_size": 400, "tie_weights": True, "dropout": 0.4, "layer_dropout": 0.25,
                   "input_dropout": 0.4, "embedding_dropout": 0.1, "weight_drop": 0.5, "locked_dropout": True,
                   "activation_penalty": 2.0, "temporal_penalty": 1.0, "optimizer": "ntasgd", "lr": 30.0,
                   "momentum": 0.0, "schedule": "constant", "warmup": 0.0, "clip_norm": 0.25, "truncation": 70,
                   "batch_size": 20, "weight_decay": 1.2e-6, "nonmono": 5, "unk_noise": 0.0,
                   "max_epochs": 500},
        "differs": "the third layer is 1150 wide and projected to 400 before the tied readout (AWD-LSTM makes "
                   "it 400 wide); the BPTT length is "
                   "fixed at 70 (not drawn around 70); validation every --eval-every steps, not every epoch; "
                   "no fine-tuning stage",
    },
}


def preset_values(name: str) -> dict:
    """The command-line values (by argparse ``dest``) of preset ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name]["values"])


def _flag(dest: str, value) -> str:
    option = "--" + dest.replace("_", "-")
    if isinstance(value, bool):
        return option if value else f"(no {option})"
    if isinstance(value, float):
        value = f"{value:.6g}"
    return f"{option} {value}"


def describe_preset(name: str, overridden=()) -> str:
    """What preset ``name`` sets, as command-line options (those given explicitly marked)."""
    entry = PRESETS[name]
    flags = [_flag(k, v) + (" [overridden]" if k in overridden else "") for k, v in entry["values"].items()]
    text = f"preset {name} ({entry['about']}) sets: " + " ".join(flags)
    if entry["differs"]:
        text += f"\n  differs from the paper: {entry['differs']}"
    return text
