"""A fitted sequence model: the normalization, the trained recurrent members and the reservoir readout,
with their averaged prediction, and saving to a folder all or nothing."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .._files import new_folder
from .collection import Normalizer, check_channels, patch_length
from .network import PooledRNN
from .reservoir import ReservoirReadout
from .training import Recipe, predict_members, train_members

__all__ = ["SequenceModel", "TASKS"]

TASKS = ("classification", "regression")
FORMAT = 1


class SequenceModel:
    """What the estimators fit: ``fit(cases, targets)`` then ``predict(cases)``.

    ``cases`` are checked (C, time_i) arrays (:func:`~rnnkit.classify.as_cases`); ``targets`` are class
    indices 0..outputs-1 (classification) or values (N, outputs) (regression, standardized inside).
    The recipe's ``members`` recurrent networks and, where ``reservoir_size > 0``, the reservoir
    readout each give class probabilities (or values); the prediction is their weighted average, the
    reservoir counting as ``reservoir_weight`` members.
    """

    def __init__(self, recipe: Recipe, task: str = "classification"):
        if task not in TASKS:
            raise ValueError(f"SequenceModel: task must be one of {list(TASKS)}, got {task!r}")
        if not recipe.members and not recipe.reservoir_size:
            raise ValueError("SequenceModel: members=0 and reservoir_size=0 leave no model; give either a "
                             "positive number")
        self.recipe, self.task = recipe, task
        self.networks, self.reservoir, self.report = [], None, {}

    def fit(self, cases: list, targets: np.ndarray, outputs: int, seed: int = 0,
            progress: bool = False) -> "SequenceModel":
        started = time.perf_counter()
        self.channels, self.outputs = check_channels(cases), outputs
        self.normalizer = Normalizer.fit(cases)
        cases = self.normalizer(cases)
        targets = np.asarray(targets)
        if self.task == "regression":
            targets = targets.reshape(len(cases), -1).astype(np.float64)
            self.target_mean, self.target_scale = targets.mean(0), targets.std(0)
            self.target_scale[self.target_scale < 1e-12] = 1.0
            targets = (targets - self.target_mean) / self.target_scale
        self.patch = patch_length([c.shape[1] for c in cases], self.recipe.max_steps)
        if self.recipe.reservoir_size:
            self.reservoir = ReservoirReadout(self.channels, self.recipe.reservoir_size, task=self.task, seed=seed)
            self.reservoir.fit(cases, targets, outputs)
        self.report["reservoir_seconds"] = time.perf_counter() - started
        if self.recipe.members:
            left = max(self.recipe.time_limit - self.report["reservoir_seconds"], 1e-3)
            recipe = Recipe(**{**asdict(self.recipe), "time_limit": left})
            self.networks, self.report["members"] = train_members(cases, targets, self.task, outputs, self.patch,
                                                                  recipe, seed, progress)
        self.report["fit_seconds"] = time.perf_counter() - started
        return self

    def predict(self, cases: list) -> np.ndarray:
        """Class probabilities (N, K), or values (N, outputs) in the targets' units."""
        check_channels(cases, self.channels)
        cases = self.normalizer(cases)
        parts, weights = [], []
        if self.networks:
            parts.append(predict_members(self.networks, cases, self.patch, self.task))
            weights.append(len(self.networks))
        if self.reservoir is not None:
            parts.append(self.reservoir.predict(cases))
            weights.append(self.recipe.reservoir_weight)
        out = np.average(parts, axis=0, weights=weights)
        if self.task == "classification":
            return out / out.sum(1, keepdims=True)
        return out * self.target_scale + self.target_mean

    # ----- saving ---------------------------------------------------------------------------------
    def save(self, path, extra: dict | None = None) -> Path:
        """Write the model to the new folder ``path`` (``model.json``, ``weights.safetensors``), with
        ``extra`` (JSON) beside its settings; all or nothing: the folder appears once every file is in."""
        path = Path(path)
        with new_folder(path) as staging:
            arrays = {"normalizer.mean": self.normalizer.mean, "normalizer.std": self.normalizer.std}
            if self.task == "regression":
                arrays.update({"target.mean": self.target_mean, "target.scale": self.target_scale})
            tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()}
            for i, network in enumerate(self.networks):
                tensors.update({f"member{i}.{k}": v.contiguous() for k, v in network.state_dict().items()})
            if self.reservoir is not None:
                tensors.update({f"reservoir.{k}": torch.as_tensor(np.asarray(v, dtype=np.float64))
                                for k, v in self.reservoir.state().items()})
                for i, cell in enumerate(self.reservoir.cells):
                    tensors.update({f"reservoir.cell{i}.{k}": v.contiguous() for k, v in cell.state_dict().items()})
            described = {"format": FORMAT, "task": self.task, "recipe": asdict(self.recipe),
                         "channels": self.channels, "outputs": self.outputs,
                         "patch": self.patch, "members": len(self.networks),
                         "input_size": self.channels * self.patch, "extra": extra or {}}
            (staging / "model.json").write_text(json.dumps(described, indent=1))
            save_file(tensors, str(staging / "weights.safetensors"))
        return path

    @classmethod
    def load(cls, path) -> tuple:
        """``(model, extra)`` from the folder :meth:`save` wrote."""
        path = Path(path)
        if not (path / "model.json").is_file():
            raise FileNotFoundError(f"'{path}' holds no saved model (no model.json); pass the folder save() wrote")
        described = json.loads((path / "model.json").read_text())
        if described.get("format") != FORMAT:
            raise ValueError(f"'{path}' was saved in format {described.get('format')!r}; this rnnkit reads {FORMAT}")
        unknown = sorted(set(described["recipe"]) - {f.name for f in fields(Recipe)})
        if unknown:
            raise ValueError(f"'{path}' was saved with recipe settings this rnnkit does not know: {unknown}")
        recipe = Recipe(**described["recipe"])
        model = cls(recipe, described["task"])
        model.channels, model.outputs, model.patch = described["channels"], described["outputs"], described["patch"]
        tensors = load_file(str(path / "weights.safetensors"))

        def numpy(key):
            return tensors[key].numpy()

        model.normalizer = Normalizer(numpy("normalizer.mean"), numpy("normalizer.std"))
        if model.task == "regression":
            model.target_mean, model.target_scale = numpy("target.mean"), numpy("target.scale")
        for i in range(described["members"]):
            network = PooledRNN(described["input_size"], model.outputs, recipe.hidden_size,
                                num_layers=recipe.num_layers, cell=recipe.cell, pooling=recipe.pooling,
                                dropout=recipe.dropout)
            prefix = f"member{i}."
            network.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            model.networks.append(network.eval())
        if recipe.reservoir_size:
            readout = ReservoirReadout(model.channels, recipe.reservoir_size, task=model.task)
            for i, cell in enumerate(readout.cells):
                prefix = f"reservoir.cell{i}."
                cell.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            model.reservoir = readout.load_state({k: numpy(f"reservoir.{k}") for k in
                                                  ("mean", "scale", "offset", "weight", "temperature", "penalty")})
        return model, described["extra"]
