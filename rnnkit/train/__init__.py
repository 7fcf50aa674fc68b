"""Training: truncated BPTT, clipping, schedules, penalties, checkpoints, data parallelism, and
exact evaluation (one model, or an ensemble of runs), and the neural cache a language model is
evaluated with."""
from .cache import CacheSettings, cache_nll, choose_cache
from .checkpoint import NoCheckpointError, checkpoint_dir, read_checkpoint, save_checkpoint
from .evaluation import ensemble_nll, token_nll
from .metrics import MetricsLog, TensorBoardLogger
from .penalties import information_flow_penalty
from .trainer import TrainConfig, Trainer, TrainingDiverged, detach_state

__all__ = ["Trainer", "TrainConfig", "TrainingDiverged", "detach_state", "save_checkpoint",
           "read_checkpoint", "checkpoint_dir", "NoCheckpointError", "MetricsLog", "TensorBoardLogger",
           "information_flow_penalty", "CacheSettings", "cache_nll", "choose_cache", "token_nll", "ensemble_nll"]
