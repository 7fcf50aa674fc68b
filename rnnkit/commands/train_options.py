"""``rnnkit train``'s options in one table: one :class:`Option` per option.

From the table come the argparse options (:func:`add_options`, in the table's order and groups),
their help text with the default a run uses (per token level where it differs), :data:`DEFAULTS`
and :data:`LEVEL_DEFAULTS`, and the keyword arguments of the configs the settings feed
(:func:`model_options`: :class:`~rnnkit.models.LanguageModelConfig`; :func:`training_options`:
:class:`~rnnkit.train.TrainConfig`; the data options make the run's data record,
:func:`rnnkit.train.lm_run.data_record`). Which config an option feeds is read from the
configs' fields, and so is its default: a config's default is the command line's, except
where an option says ``default=`` and why (``--eval-tokens``).

:func:`resolve` fills the options left out (the preset's value, else the level's, else the
default). Each relation between options is checked once:

- here, in :func:`resolve`, in the command line's words: ``--snapshots K`` sets ``--cycles K``
  and refuses another ``--cycles``; ``--cycles``/``--snapshots`` need the cosine schedule and
  no ntasgd; the word level's two snapshots give way to ``--cycles``, ``--members``, another
  schedule or ntasgd; a tied default follows ``--hidden-size``/``--projection-size``.
  TrainConfig refuses the same cycles in its fields' words, for Python callers; the command
  line never reaches that check, since :func:`resolve` refuses first.
- in the configs, which the command line reaches with the configs' words (so kept as they
  were): members or snapshots (``LanguageModelConfig``), tied weights and sizes, the adaptive
  softmax and its cutoffs (``LanguageModelConfig``), the warm-up within the first cycle
  (``TrainConfig``).

:func:`check_resume` refuses an option that would change a resumed run.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable

from .._arguments import check_int
from ..models.language_model import CELL_NETWORKS, LanguageModelConfig
from ..train.distributed import DEVICES, PRECISIONS
from ..train.lm_run import data_record
from ..train.recipes import PRESETS
from ..train.train_config import TrainConfig

__all__ = ["Option", "OPTIONS", "DEFAULTS", "LEVEL_DEFAULTS", "MODEL_OPTIONS", "TRAINING_OPTIONS",
           "DATA_OPTIONS", "LIMITS", "RESUMABLE", "add_options", "resolve", "default_limit", "check_values",
           "model_options", "training_options", "check_resume"]

FROM_CONFIG = object()          # the default is the field default of the config the option feeds
LEVELS = ("word", "bpe")        # char is the default level: its defaults are the options' own
CONFIGS = {"model": LanguageModelConfig, "training": TrainConfig}


@dataclass(frozen=True)
class Option:
    """One option of ``rnnkit train``: ``--name-with-dashes``, stored as ``name``.

    ``setting``: a setting of the run, resolved by :func:`resolve` (argparse leaves it None so
    that an option given is told from one left out) and recorded in the checkpoint; otherwise
    argparse's own ``default`` applies. ``levels``: the default at word / BPE level where it
    differs. ``default_help``: the default as the help states it where a value says too little
    ("" for nothing). ``zero_is_none``: 0 on the command line is None in the config (off, or
    all). ``at_least_one``: refused below 1 as a usage error. ``check``: a check of a value
    given, in the command line's words."""

    name: str
    group: str
    help: str
    type: Callable | None = None
    choices: tuple | None = None
    metavar: str | None = None
    default: Any = FROM_CONFIG
    levels: dict = field(default_factory=dict)
    level_note: str = ""
    default_help: str | None = None
    setting: bool = True
    action: str | type | None = None
    extra: dict = field(default_factory=dict)           # other argparse keywords (nargs, const)
    negatable: bool = False                             # a flag with an unlisted --no-FLAG too
    zero_is_none: bool = False
    at_least_one: bool = False
    check: Callable | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def feeds(self) -> str:
        """``"model"``, ``"training"`` (the configs whose field it is), ``"data"`` or ``"run"``."""
        for feeds, config in CONFIGS.items():
            if self.setting and self.name in {f.name for f in fields(config)}:
                return feeds
        return "data" if self.setting else "run"

    @property
    def value(self):
        """The default at character level: declared, or the config field's."""
        if self.default is not FROM_CONFIG:
            return self.default
        found = {f.name: f for f in fields(CONFIGS[self.feeds])}[self.name]
        return found.default if found.default is not MISSING else found.default_factory()


def _int_list(text: str) -> list:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _seed(value) -> None:
    check_int("", "--seed", value, 0, maximum=2 ** 63 - 1)


# The word-level defaults were chosen on Penn Treebank's validation text (66k training words) against
# a plain PyTorch script in 3-10 minute budgets on 2 cores (benchmarks/word_lm.py, and the README for
# the runs behind each value): a small tied model, regularized on every side. A small-text recipe: its
# lead over the plain script shrinks as the training text grows (benchmarks/word_lm_scaling.py). The
# schedule runs twice and both ends predict together (a snapshot ensemble at one model's training cost,
# 149.6 against 156.3 for one cycle on that benchmark); a preset, another schedule, --cycles or
# --members leave one model (resolve()).
_NO_SNAPSHOTS = "unless --cycles, --members, another --schedule or --optimizer ntasgd"
OPTIONS = (
    Option("data", "data", "UTF-8 text file, directory of them, - for stdin, or a token file made by rnnkit "
           "prepare", metavar="PATH", default=None, default_help="default: the built-in corpus"),
    Option("level", "data", "tokens: characters; words + <eos> per line (the Penn Treebank convention; a "
           "literal <unk> is the unknown word); or byte-level BPE trained on the training part",
           choices=("char", "word", "bpe"), default="char"),
    Option("validation_fraction", "data", "fraction of the text, after the training part, held out for "
           "validation", type=float, default=0.1),
    Option("test_fraction", "data", "last fraction of the text held out for the final test, never used for any "
           "choice; 0 = none", type=float, default=0.1),
    Option("validation_data", "data", "a separate validation text (then --data is not split for validation)",
           metavar="PATH", default=None),
    Option("test_data", "data", "a separate test text (then --data is not split for testing)", metavar="PATH",
           default=None),
    Option("min_count", "data", "word level: keep words seen at least this often", type=int, default=1,
           at_least_one=True),
    Option("max_vocab", "data", "cap the vocabulary size, specials included; the BPE size", type=int,
           default=None, levels={"bpe": 8192}, default_help="default: no cap", at_least_one=True),
    Option("cache_dir", "data", "where token files are kept", metavar="DIR", setting=False, default=None,
           default_help="default $RNNKIT_CACHE_DIR, else ~/.cache/rnnkit"),
    Option("preset", "", "a published recipe (Zaremba et al. 2014, AWD-LSTM); options given on the command "
           "line win over it, and it prints what it sets", choices=tuple(sorted(PRESETS)), setting=False, default=None,
           default_help=""),
    # the model: LanguageModelConfig
    Option("cell", "model", "recurrent cell", choices=tuple(sorted(CELL_NETWORKS))),
    Option("hidden_size", "model", "hidden units per layer", type=int, levels={"word": 128, "bpe": 512},
           at_least_one=True),
    Option("num_layers", "model", "stacked layers", type=int, levels={"word": 2}, at_least_one=True),
    # a tied default follows the readout's size (resolve()): these are the sizes of a default run
    Option("embedding_size", "model", "token embedding size", type=int, levels={"word": 128, "bpe": 512},
           level_note="the readout's size while the weights are tied", at_least_one=True),
    Option("dropout", "model", "dropout on the last layer's output, and by default on the embeddings and "
           "between layers", type=float, levels={"word": 0.4, "bpe": 0.25}),
    Option("input_dropout", "model", "dropout on the embeddings", type=float, default_help="default: --dropout"),
    Option("layer_dropout", "model", "dropout between layers", type=float, default_help="default: --dropout"),
    Option("locked_dropout", "model", "one dropout mask per sequence on inputs, between layers and on outputs, "
           "the same at every step (AWD-LSTM's variational dropout), not a new one at each step",
           action="store_true"),
    Option("embedding_dropout", "model", "drop whole words from the embedding", type=float, levels={"word": 0.1}),
    Option("weight_drop", "model", "DropConnect on the recurrent weights", type=float, levels={"word": 0.2}),
    Option("unk_noise", "model", "train with a word seen c times read and predicted as <unk> with probability "
           "ALPHA/(ALPHA+c), so that the model learns how often unseen words come; 0 = off", type=float,
           metavar="ALPHA", levels={"word": 0.5}),
    Option("activation_penalty", "model", "AR: ALPHA x mean squared output activation", type=float,
           metavar="ALPHA", levels={"word": 1.0}),
    Option("temporal_penalty", "model", "TAR: BETA x mean squared change of the output between steps",
           type=float, metavar="BETA", levels={"word": 1.0}),
    Option("tie_weights", "model", "share embedding and readout weights", action="store_true",
           levels={"word": True, "bpe": True}, level_note="while the sizes allow", negatable=True),
    Option("projection_size", "model", "project the last layer's output to this size before the readout",
           type=int, default_help="default none", at_least_one=True),
    Option("softmax", "model", "full, or adaptive (Grave et al. 2017) for large vocabularies",
           choices=("full", "adaptive")),
    Option("cutoffs", "model", "adaptive softmax cluster boundaries", type=_int_list, metavar="N,N,...",
           default_help="default 2000,10000,50000 below the vocabulary size"),
    Option("init_scale", "model", "initialise every weight from U(-s, s)", type=float,
           default_help="default: each module's own initialisation"),
    Option("members", "model", "train K models of these settings side by side as one ensemble: each learns as "
           "it would alone, and a token's probability is the mean of theirs", type=int, metavar="K"),
    Option("snapshots", "model", "a snapshot ensemble (Huang et al. 2017) at one model's cost: the schedule "
           "restarts K times (--cycles K) and the model each cycle ends with predicts with the others, the mean "
           "of their probabilities", type=int, metavar="K", levels={"word": 2}, level_note=_NO_SNAPSHOTS),
    # optimisation: TrainConfig
    Option("truncation", "optimisation", "BPTT steps per chunk", type=int, levels={"word": 35}, at_least_one=True),
    Option("batch_size", "optimisation", "parallel streams per process", type=int, levels={"word": 20},
           at_least_one=True),
    Option("optimizer", "optimisation", "adam, sgd, or ntasgd: SGD, then averaged once validation stalls",
           choices=("adam", "sgd", "ntasgd")),
    Option("lr", "optimisation", "peak learning rate", type=float),
    Option("momentum", "optimisation", "SGD momentum", type=float),
    Option("weight_decay", "optimisation", "L2 weight decay", type=float),
    Option("schedule", "optimisation", "learning-rate schedule: cosine over the run, halve on a plateau, "
           "constant, or step (x --decay-factor each epoch from --decay-start on)",
           choices=("cosine", "plateau", "constant", "step")),
    Option("cycles", "optimisation", "cosine: restart the schedule N times, each cycle from the peak rate down, "
           "as in SGDR", type=int, metavar="N", default_help="default 1, or --snapshots"),
    Option("warmup", "optimisation", "warm-up fraction of the run, cosine", type=float),
    Option("decay_start", "optimisation", "step schedule: first epoch (counted from 1) at a lower rate",
           type=int, at_least_one=True),
    Option("decay_factor", "optimisation", "step schedule: factor per epoch", type=float),
    Option("nonmono", "optimisation", "ntasgd: validations to look back", type=int, at_least_one=True),
    Option("clip_norm", "optimisation", "global gradient-norm clip, 0 = off", type=float, zero_is_none=True),
    Option("clip_value", "optimisation", "element-wise gradient clip", type=float, default_help="default off"),
    Option("information_flow", "optimisation", "weight of Pascanu et al.'s regularizer keeping gradient norms "
           "equal across steps, 0 = off; on, the recurrence runs on the slower loop engine", type=float,
           metavar="WEIGHT"),
    Option("recurrent_init", "optimisation", "re-initialise every recurrent gate block",
           choices=("orthogonal", "identity"), default_help="default: the cell's own init"),
    Option("recurrent_gain", "optimisation", "scale of --recurrent-init", type=float),
    # the run: the limits (TrainConfig's, None here: default_limit() applies 2 minutes when none is set)
    Option("max_minutes", "run", "wall-clock budget", type=float, default=None,
           default_help="default 2 when no other limit is set"),
    Option("max_epochs", "run", "passes over the training text", type=float, default=None),
    Option("max_steps", "run", "optimizer steps", type=int, default=None, at_least_one=True),
    Option("eval_every", "run", "steps between validations", type=int, levels={"word": 200}, at_least_one=True),
    # TrainConfig evaluates every token unless told (a Python caller sizes its own data); the command
    # line caps each validation so that a run on a large corpus spends its budget training
    Option("eval_tokens", "run", "tokens each evaluation scores at most, 0 = all", type=int, default=50_000,
           levels={"word": 250_000}, zero_is_none=True),
    Option("early_stopping", "run", "stop after N validations without improvement", type=int, metavar="N"),
    Option("seed", "run", "random seed", type=int, check=_seed),
    Option("neural_cache", "run", "also score the test text with a neural cache (Grave et al. 2017) chosen on "
           "validation; kept for rnnkit evaluate", action=argparse.BooleanOptionalAction, setting=False,
           default=None, default_help="default: on at word level without a preset"),
    Option("out", "run", "run directory", setting=False, default="runs/lm"),
    Option("resume", "run", "continue the run in --out from its last checkpoint; only --max-minutes/"
           "--max-epochs/--max-steps may change", action="store_true", setting=False, default=False,
           default_help=""),
    Option("tensorboard", "run", "also log to TensorBoard, in DIR (default OUT/tensorboard); needs pip install "
           "'rnnkit[tensorboard]'", metavar="DIR", setting=False, default=None, extra={"nargs": "?", "const": ""}),
    Option("device", "run", "where to train: auto (CUDA when torch finds a GPU, each process its own under "
           "torchrun, else the CPU), cpu or cuda; a run may resume on another device", choices=DEVICES,
           setting=False, default="auto"),
    Option("precision", "run", "the forward pass and the loss in float32, or under autocast in bfloat16 (CPU or "
           "GPU) or float16 (GPU only, with gradient scaling); a resumed run keeps its precision",
           choices=tuple(PRECISIONS)),
    Option("quiet", "run", "no progress bars", action="store_true", setting=False, default=False, default_help=""),
)
BY_NAME = {option.name: option for option in OPTIONS}

# may change on --resume
LIMITS = ("max_minutes", "max_epochs", "max_steps")
# options a resumed run applies (and records in its next checkpoint): the limits, and the learning rate,
# which the schedule reads afresh at every step (the optimizer's moments do not depend on it)
RESUMABLE = LIMITS + ("lr",)
SETTINGS = tuple(o for o in OPTIONS if o.setting and o.name not in LIMITS)
DATA_OPTIONS = tuple(o.name for o in SETTINGS if o.feeds == "data")
MODEL_OPTIONS = tuple(o.name for o in SETTINGS if o.feeds == "model")
TRAINING_OPTIONS = tuple(o.name for o in SETTINGS if o.feeds == "training")
# every setting's value when neither the command line, a preset nor the token level sets it
DEFAULTS = {o.name: o.value for o in SETTINGS}
LEVEL_DEFAULTS = {level: {o.name: o.levels[level] for o in SETTINGS if level in o.levels} for level in LEVELS}
AT_LEAST_ONE = tuple(o.name for o in OPTIONS if o.at_least_one)


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_text(option: Option) -> str:
    """The option's help, ending with the default a run uses, and each level's where it differs."""
    value = option.value
    if option.default_help is not None:
        default = option.default_help
    else:
        default = "" if value is None else f"default {_shown(value)}"
    levels = ", ".join(f"{level} {_shown(option.levels[level])}" for level in LEVELS
                       if level in option.levels and option.levels[level] != value)
    if levels:
        default += f"; {levels}" + (f", {option.level_note}" if option.level_note else "")
    return f"{option.help} ({default})" if default else option.help


def add_options(parser, names=None) -> None:
    """Add the table's options (or those in ``names``) to ``parser``, in argument groups."""
    groups = {}
    for option in OPTIONS:
        if names is not None and option.name not in names:
            continue
        if option.group and option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        target = groups.get(option.group, parser)
        keywords = {"help": help_text(option), "default": option.default if not option.setting else None}
        keywords.update(option.extra)
        for key in ("type", "choices", "metavar", "action"):
            if getattr(option, key) is not None:
                keywords[key] = getattr(option, key)
        target.add_argument(option.flag, **keywords)
        if option.negatable:              # --no-tie-weights: a tied default undone, unlisted
            target.add_argument("--no-" + option.flag[2:], dest=option.name, action="store_false",
                                help=argparse.SUPPRESS)


def resolve(args, preset: dict | None) -> set:
    """Fill every setting left as None: the preset's value, else the level's default, else
    :data:`DEFAULTS`; check the relations between them. Returns the names of the settings given
    on the command line."""
    given = {name for name in DEFAULTS if getattr(args, name, None) is not None}
    preset = preset or {}
    level = args.level or preset.get("level") or DEFAULTS["level"]
    level_defaults = LEVEL_DEFAULTS.get(level, {})
    for name, default in DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, preset.get(name, level_defaults.get(name, default)))
    for name in LIMITS:                    # a preset's own length (Zaremba et al.'s epochs, say)
        if getattr(args, name, None) is None and name in preset:
            setattr(args, name, preset[name])
    if level_defaults.get("tie_weights") and "tie_weights" not in given and "tie_weights" not in preset:
        # a tied default follows the sizes given: the embedding takes the readout's size, unless it
        # was given too, and then the weights stay untied
        readout = args.projection_size or args.hidden_size
        if "embedding_size" not in given and "embedding_size" not in preset:
            args.embedding_size = readout
        args.tie_weights = args.embedding_size == readout and args.softmax != "adaptive"
    if "snapshots" not in given and "snapshots" not in preset and args.snapshots > 1 and (
            "cycles" in given or args.members > 1 or args.schedule != "cosine" or args.optimizer == "ntasgd"):
        args.snapshots = 1                 # the level's snapshots need the cosine's cycles, and no other ensemble
    if args.snapshots > 1:                 # one cycle of the schedule per snapshot
        if "cycles" in given and args.cycles != args.snapshots:
            raise ValueError(f"--snapshots {args.snapshots} keeps the end of each of {args.snapshots} cycles of the "
                             f"schedule, and --cycles is {args.cycles}; drop --cycles")
        args.cycles = args.snapshots
    # TrainConfig refuses the same in its fields' words, for Python callers; this check comes first
    if args.cycles > 1 and (args.schedule != "cosine" or args.optimizer == "ntasgd"):
        what = f"--schedule {args.schedule}" if args.schedule != "cosine" else "--optimizer ntasgd (it averages)"
        preset = getattr(args, "preset", None)
        raise ValueError(f"--cycles/--snapshots restart the cosine schedule of Adam or SGD, and this run has "
                         f"{what}{f' (preset {preset})' if preset else ''}; pass --schedule cosine and "
                         f"--optimizer adam or sgd, or drop --cycles/--snapshots")
    return given


def default_limit(args) -> None:
    """A new run with no limit (none given, none in its preset) trains for TrainConfig's default minutes."""
    if all(getattr(args, name) is None for name in LIMITS):
        args.max_minutes = TrainConfig.max_minutes


def check_values(args) -> None:
    """The table's checks of the values given, in the command line's words."""
    for option in OPTIONS:
        if option.check is not None and getattr(args, option.name, None) is not None:
            option.check(getattr(args, option.name))


def _config_value(option: Option, value):
    return (value or None) if option.zero_is_none else value


def model_options(args) -> dict:
    """:class:`~rnnkit.models.LanguageModelConfig`'s keyword arguments (all but ``vocab_size``)."""
    return {name: getattr(args, name) for name in MODEL_OPTIONS}


def training_options(args) -> dict:
    """:class:`~rnnkit.train.TrainConfig`'s keyword arguments: the training settings and the limits."""
    return {name: _config_value(BY_NAME[name], getattr(args, name)) for name in TRAINING_OPTIONS + LIMITS}


def check_resume(given: set, args, saved: dict) -> None:
    """Refuse, naming it, any option given with --resume that differs from the saved run."""
    model, training, data = saved["model"], saved["training"], saved.get("data") or {}
    record = data_record(args) if isinstance(data, dict) else {}
    for name in sorted(given):
        if name in RESUMABLE:
            continue
        if name in MODEL_OPTIONS:
            before, now = model.get(name, DEFAULTS[name]), getattr(args, name)
        elif name in TRAINING_OPTIONS:                 # absent: saved before it existed
            before, now = training.get(name, DEFAULTS[name]), _config_value(BY_NAME[name], getattr(args, name))
        elif name in DATA_OPTIONS and isinstance(data, dict):
            before, now = data.get("path" if name == "data" else name), record.get("path" if name == "data" else name)
        else:
            continue
        if before != now:
            option = BY_NAME[name].flag
            shown = f"data ({before})" if name == "data" else f"{before}"
            raise ValueError(f"{option} {getattr(args, name)} differs from this run's {shown}: a resumed run "
                             f"keeps its data, model and optimizer; drop {option} (only --max-minutes, "
                             f"--max-epochs, --max-steps and --lr may change), or start a new run with --out "
                             f"NEW_DIRECTORY")
