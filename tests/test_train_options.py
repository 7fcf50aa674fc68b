"""rnnkit train's option table (rnnkit/commands/train_options.py): the settings it resolves, the
configs it feeds and the help it writes."""
import pytest

from rnnkit.commands import build_parser
from rnnkit.commands import train_options as options
from rnnkit.models import LanguageModelConfig
from rnnkit.train import TrainConfig
from rnnkit.train.lm_run import data_record
from rnnkit.train.recipes import preset_values

# What these command lines resolved to at 4dcbe76, before the table (computed there with its own
# resolve() and its TrainConfig(...) of 29 keyword arguments): a plain run in full, then what each
# command line changes against it, or against a plain word-level run.
PLAIN = {'model.vocab_size': 300, 'model.cell': 'lstm', 'model.hidden_size': 256, 'model.num_layers': 1,
         'model.embedding_size': 64, 'model.dropout': 0.0, 'model.tie_weights': False, 'model.engine': 'auto',
         'model.embedding_dropout': 0.0, 'model.input_dropout': None, 'model.layer_dropout': None,
         'model.weight_drop': 0.0, 'model.activation_penalty': 0.0, 'model.temporal_penalty': 0.0,
         'model.projection_size': None, 'model.softmax': 'full', 'model.cutoffs': None, 'model.init_scale': None,
         'model.locked_dropout': False, 'model.members': 1, 'model.snapshots': 1, 'training.batch_size': 32,
         'training.truncation': 64, 'training.optimizer': 'adam', 'training.lr': 0.01, 'training.momentum': 0.9,
         'training.nonmono': 5, 'training.weight_decay': 0.0, 'training.clip_norm': 1.0,
         'training.clip_value': None, 'training.information_flow': 0.0, 'training.unk_noise': 0.0,
         'training.recurrent_init': None, 'training.recurrent_gain': 1.0, 'training.schedule': 'cosine',
         'training.cycles': 1, 'training.warmup': 0.02, 'training.min_lr_fraction': 0.0,
         'training.plateau_factor': 0.5, 'training.plateau_patience': 1, 'training.decay_start': 1,
         'training.decay_factor': 0.5, 'training.max_minutes': 2.0, 'training.max_epochs': None,
         'training.max_steps': None, 'training.eval_every': 500, 'training.eval_tokens': 50000,
         'training.early_stopping': None, 'training.seed': 0, 'training.precision': 'fp32', 'data.path': None,
         'data.level': 'char', 'data.validation_fraction': 0.1, 'data.test_fraction': 0.1,
         'data.validation_data': None, 'data.test_data': None, 'data.min_count': 1, 'data.max_vocab': None}
WORD = {**PLAIN,                  # a plain word-level run
        'model.hidden_size': 128, 'model.num_layers': 2, 'model.embedding_size': 128, 'model.dropout': 0.4,
        'model.tie_weights': True, 'model.embedding_dropout': 0.1, 'model.weight_drop': 0.2,
        'model.activation_penalty': 1.0, 'model.temporal_penalty': 1.0, 'model.snapshots': 2,
        'training.batch_size': 20, 'training.truncation': 35, 'training.unk_noise': 0.5, 'training.cycles': 2,
        'training.eval_every': 200, 'training.eval_tokens': 250000, 'data.level': 'word'}
CHANGES = [
    (['--level', 'word'], WORD, {}),
    (['--level', 'bpe'], PLAIN,
     {'model.hidden_size': 512, 'model.embedding_size': 512, 'model.dropout': 0.25, 'model.tie_weights': True,
      'data.level': 'bpe', 'data.max_vocab': 8192}),
    (['--level', 'word', '--preset', 'zaremba-small'], WORD,
     {'model.hidden_size': 200, 'model.embedding_size': 200, 'model.dropout': 0.0, 'model.tie_weights': False,
      'model.init_scale': 0.1, 'model.snapshots': 1, 'training.truncation': 20, 'training.optimizer': 'sgd',
      'training.lr': 1.0, 'training.momentum': 0.0, 'training.clip_norm': 5.0, 'training.unk_noise': 0.0,
      'training.schedule': 'step', 'training.cycles': 1, 'training.warmup': 0.0, 'training.decay_start': 4,
      'training.max_minutes': None, 'training.max_epochs': 13}),
    (['--preset', 'zaremba-medium'], WORD,
     {'model.hidden_size': 650, 'model.embedding_size': 650, 'model.dropout': 0.5, 'model.tie_weights': False,
      'model.init_scale': 0.05, 'model.snapshots': 1, 'training.optimizer': 'sgd', 'training.lr': 1.0,
      'training.momentum': 0.0, 'training.clip_norm': 5.0, 'training.unk_noise': 0.0, 'training.schedule': 'step',
      'training.cycles': 1, 'training.warmup': 0.0, 'training.decay_start': 6, 'training.decay_factor': 0.8,
      'training.max_minutes': None, 'training.max_epochs': 39}),
    (['--level', 'word', '--preset', 'zaremba-large', '--dropout', '0.3', '--max-epochs', '2'], WORD,
     {'model.hidden_size': 1500, 'model.embedding_size': 1500, 'model.dropout': 0.3, 'model.tie_weights': False,
      'model.init_scale': 0.04, 'model.snapshots': 1, 'training.optimizer': 'sgd', 'training.lr': 1.0,
      'training.momentum': 0.0, 'training.clip_norm': 10.0, 'training.unk_noise': 0.0, 'training.schedule': 'step',
      'training.cycles': 1, 'training.warmup': 0.0, 'training.decay_start': 14,
      'training.decay_factor': 0.8695652173913044, 'training.max_minutes': None, 'training.max_epochs': 2.0}),
    (['--level', 'word', '--preset', 'awd-lstm'], WORD,
     {'model.hidden_size': 1150, 'model.num_layers': 3, 'model.embedding_size': 400, 'model.input_dropout': 0.4,
      'model.layer_dropout': 0.25, 'model.weight_drop': 0.5, 'model.activation_penalty': 2.0,
      'model.projection_size': 400, 'model.locked_dropout': True, 'model.snapshots': 1, 'training.truncation': 70,
      'training.optimizer': 'ntasgd', 'training.lr': 30.0, 'training.momentum': 0.0,
      'training.weight_decay': 1.2e-06, 'training.clip_norm': 0.25, 'training.unk_noise': 0.0,
      'training.schedule': 'constant', 'training.cycles': 1, 'training.warmup': 0.0, 'training.max_minutes': None,
      'training.max_epochs': 500}),
    (['--level', 'word', '--hidden-size', '200'], WORD,
     {'model.hidden_size': 200, 'model.embedding_size': 200}),
    (['--level', 'word', '--embedding-size', '64'], WORD,
     {'model.embedding_size': 64, 'model.tie_weights': False}),
    (['--level', 'word', '--projection-size', '64'], WORD,
     {'model.embedding_size': 64, 'model.projection_size': 64}),
    (['--level', 'word', '--softmax', 'adaptive', '--cutoffs', '100,200'], WORD,
     {'model.tie_weights': False, 'model.softmax': 'adaptive', 'model.cutoffs': [100, 200]}),
    (['--level', 'word', '--no-tie-weights'], WORD,
     {'model.tie_weights': False}),
    (['--level', 'bpe', '--hidden-size', '300', '--max-vocab', '1000'], PLAIN,
     {'model.hidden_size': 300, 'model.embedding_size': 300, 'model.dropout': 0.25, 'model.tie_weights': True,
      'data.level': 'bpe', 'data.max_vocab': 1000}),
    (['--level', 'word', '--cycles', '3'], WORD,
     {'model.snapshots': 1, 'training.cycles': 3}),
    (['--level', 'word', '--members', '2'], WORD,
     {'model.members': 2, 'model.snapshots': 1, 'training.cycles': 1}),
    (['--level', 'word', '--schedule', 'constant'], WORD,
     {'model.snapshots': 1, 'training.schedule': 'constant', 'training.cycles': 1}),
    (['--level', 'word', '--optimizer', 'ntasgd'], WORD,
     {'model.snapshots': 1, 'training.optimizer': 'ntasgd', 'training.cycles': 1}),
    (['--snapshots', '3', '--warmup', '0.1'], PLAIN,
     {'model.snapshots': 3, 'training.cycles': 3, 'training.warmup': 0.1}),
    (['--lr', '0.5', '--clip-norm', '0', '--eval-tokens', '0', '--max-steps', '5', '--seed', '7'], PLAIN,
     {'training.lr': 0.5, 'training.clip_norm': None, 'training.max_minutes': None, 'training.max_steps': 5,
      'training.eval_tokens': None, 'training.seed': 7}),
    (['--level', 'word', '--eval-tokens', '1000', '--clip-value', '0.5', '--precision', 'bf16',
      '--max-minutes', '1'], WORD,
     {'training.clip_value': 0.5, 'training.max_minutes': 1.0, 'training.eval_tokens': 1000,
      'training.precision': 'bf16'}),
    (['--cell', 'gru', '--num-layers', '3', '--dropout', '0.2', '--locked-dropout', '--tie-weights',
      '--embedding-size', '256', '--test-fraction', '0', '--validation-fraction', '0.2'], PLAIN,
     {'model.cell': 'gru', 'model.num_layers': 3, 'model.embedding_size': 256, 'model.dropout': 0.2,
      'model.tie_weights': True, 'model.locked_dropout': True, 'data.validation_fraction': 0.2,
      'data.test_fraction': 0.0}),
]


def resolved(command_line) -> dict:
    """The settings of a new run of ``rnnkit train`` with these options, as the configs get them."""
    args = build_parser().parse_args(["train", *command_line])
    options.resolve(args, preset_values(args.preset) if args.preset else None)
    options.default_limit(args)
    model = LanguageModelConfig(vocab_size=300, **options.model_options(args))
    training = TrainConfig(**options.training_options(args))
    return {**{f"model.{k}": v for k, v in model.to_dict().items()},
            **{f"training.{k}": v for k, v in training.to_dict().items()},
            **{f"data.{k}": v for k, v in data_record(args).items()}}


def test_a_plain_run_resolves_as_before():
    assert resolved([]) == PLAIN


@pytest.mark.parametrize("command_line, against, changes", CHANGES, ids=[" ".join(c) for c, _, _ in CHANGES])
def test_every_command_line_resolves_as_before(command_line, against, changes):
    assert resolved(command_line) == {**PLAIN, **against, **changes}


def test_the_configs_defaults_are_the_tables():
    """A default run's configs equal the configs' own defaults, but for the one option the command
    line sets apart (--eval-tokens: TrainConfig evaluates every token unless told)."""
    model = LanguageModelConfig(vocab_size=300).to_dict()
    assert {k: v for k, v in PLAIN.items() if k.startswith("model.")} == {f"model.{k}": v for k, v in model.items()}
    training = {f"training.{k}": v for k, v in TrainConfig().to_dict().items()}
    differs = {k for k, v in PLAIN.items() if k.startswith("training.") and training[k] != v}
    assert differs == {"training.eval_tokens"}
    assert options.BY_NAME["eval_tokens"].default is not options.FROM_CONFIG


@pytest.mark.parametrize("option", [o for o in options.OPTIONS if o.levels], ids=lambda o: o.name)
def test_the_help_states_each_levels_default(option):
    text = options.help_text(option)
    for level, value in option.levels.items():
        assert f"{level} {options._shown(value)}" in text
    if option.value is not None:
        assert f"(default {options._shown(option.value)}" in text


def test_each_option_feeds_one_config_or_the_data():
    assert set(options.MODEL_OPTIONS) | {"vocab_size", "engine"} == set(LanguageModelConfig.__dataclass_fields__)
    assert set(options.TRAINING_OPTIONS + options.LIMITS) | {"min_lr_fraction", "plateau_factor",
                                                            "plateau_patience"} == set(TrainConfig.__dataclass_fields__)
    assert options.DATA_OPTIONS == ("data", "level", "validation_fraction", "test_fraction", "validation_data",
                                    "test_data", "min_count", "max_vocab")


@pytest.mark.parametrize("level", ["char", "word"])
@pytest.mark.parametrize("schedule", ["cosine", "plateau", "constant", "step"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd", "ntasgd"])
@pytest.mark.parametrize("ensemble", [[], ["--cycles", "2"], ["--snapshots", "2"], ["--cycles", "3", "--snapshots", "3"]])
def test_the_command_line_never_reaches_trainconfigs_check_of_the_cycles(level, schedule, optimizer, ensemble):
    """resolve() checks the cycles in the command line's words first; TrainConfig's own check of the
    same relation, in its fields' words, is for Python callers."""
    args = build_parser().parse_args(["train", "--level", level, "--schedule", schedule, "--optimizer", optimizer,
                                      *ensemble])
    try:
        options.resolve(args, None)
    except ValueError as error:
        assert str(error).startswith("--cycles/--snapshots restart the cosine schedule")
        return
    options.default_limit(args)
    TrainConfig(**options.training_options(args))
