"""A language model from its config, and a trained one from its run directory (read through the
checkpoint format of :mod:`rnnkit._checkpoint`, which the trainer writes)."""
from __future__ import annotations

from .._checkpoint import read_checkpoint
from ..data.vocab import Vocabulary
from .ensemble import LanguageModelEnsemble
from .language_model import LanguageModel, LanguageModelConfig

__all__ = ["build_language_model", "load_language_model"]


def build_language_model(config: LanguageModelConfig):
    """A :class:`LanguageModel`, or a :class:`~rnnkit.models.ensemble.LanguageModelEnsemble` when
    ``config.members`` or ``config.snapshots`` is above 1."""
    if config.models > 1:
        return LanguageModelEnsemble(config)
    return LanguageModel(config)


def load_language_model(run_dir, which: str = "best", *, device=None):
    """Rebuild a trained model and its vocabulary from a run directory alone.

    Returns ``(model, vocabulary, checkpoint_config)``; the model is in eval mode.
    """
    weights, config, _ = read_checkpoint(run_dir, which)
    where = f"{run_dir}'s {which} checkpoint"
    missing = [key for key in ("model", "vocabulary") if key not in config]
    # the model's sizes must all be written down: a size left to its default would build another model
    missing += [f"model.{key}" for key in ("vocab_size", "hidden_size", "embedding_size", "num_layers", "cell")
                if "model" in config and key not in config["model"]]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)} in its config.json; it is incomplete or was edited. "
                         f"Use the run's other checkpoint, or train again")
    model = build_language_model(LanguageModelConfig.from_dict(config["model"]))
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[1:2] or [str(error)]
        raise ValueError(f"{where}: its weights do not fit the model its config describes "
                         f"({first[0].strip()}); the checkpoint is inconsistent") from None
    vocab = Vocabulary.from_dict(config["vocabulary"])
    if len(vocab) != model.vocab_size:
        raise ValueError(f"{run_dir}: the vocabulary has {len(vocab)} tokens but the model predicts "
                         f"{model.vocab_size}; the checkpoint is inconsistent")
    return model.to(device or "cpu").eval(), vocab, config
