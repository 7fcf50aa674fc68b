"""The default recipe's training: members over seeds, each with its own validation split, early stopping
on the validation loss (the best epoch's weights kept), balanced class weights, a time budget shared by
the members and one progress bar."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .collection import batch_cases
from .network import PooledRNN

__all__ = ["Recipe", "validation_split", "balanced_weights", "train_members", "predict_members"]


@dataclass
class Recipe:
    """The settings of the default recipe; every field has the value chosen by measurement (see
    docs/classification.md), and the estimators take each as a keyword."""
    hidden_size: int = 64
    num_layers: int = 1
    cell: str = "gru"
    pooling: str = "meanmax"
    max_steps: int = 64             # cases longer than this are read in patches of consecutive steps
    dropout: float = 0.2
    lr: float = 3e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    max_epochs: int = 200
    patience: int = 30              # epochs without a better validation loss before a member stops
    validation_size: float = 0.2
    members: int = 5                # networks over seeds and validation splits, their outputs averaged
    time_limit: float = 60.0        # seconds for the whole fit, shared by the members
    reservoir_size: int = 150       # units per leak rate of the reservoir readout; 0 leaves it out
    reservoir_weight: float = 1.0   # the reservoir readout counts as this many members in the average


def validation_split(targets: np.ndarray, fraction: float, rng: np.random.Generator, stratify: bool):
    """``(train, validation)`` indices: ``fraction`` of the cases (of each class with ``stratify``),
    never a class's last case, and no validation at all where fewer than 10 cases are given."""
    n = len(targets)
    if fraction <= 0 or n < 10:
        return np.arange(n), np.arange(0)
    groups = [np.flatnonzero(targets == c) for c in np.unique(targets)] if stratify else [np.arange(n)]
    held = []
    for group in groups:
        take = min(int(round(fraction * len(group))), len(group) - 1)
        held.extend(rng.choice(group, size=take, replace=False).tolist())
    held = np.sort(np.asarray(held, dtype=int))
    return np.setdiff1d(np.arange(n), held), held


def balanced_weights(targets: np.ndarray, classes: int) -> torch.Tensor:
    """``n / (K · n_c)`` per class ``c`` (scikit-learn's "balanced"); an absent class weighs 0."""
    counts = np.bincount(targets, minlength=classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(classes)
    weights[present] = len(targets) / (present.sum() * counts[present])
    return torch.as_tensor(weights, dtype=torch.float32)


def _loss(task: str, weights):
    if task == "classification":
        return nn.CrossEntropyLoss(weight=weights)
    return nn.MSELoss()


def _evaluate(network, loss_fn, x, lengths, y, batch_size: int) -> float:
    network.eval()
    with torch.no_grad():
        outputs = torch.cat([network(x[i:i + batch_size], lengths[i:i + batch_size])
                             for i in range(0, len(x), batch_size)])
    network.train()
    return float(loss_fn(outputs, y))


def train_members(cases: list, targets: np.ndarray, task: str, outputs: int, patch: int, recipe: Recipe,
                  seed: int, progress: bool = False) -> tuple:
    """Train ``recipe.members`` networks on ``cases`` (normalized, (C, time_i)) and ``targets`` (class
    indices, or standardized values (N, outputs)); returns ``(networks, report)`` where ``report`` holds
    per member the epochs run, the best epoch, its validation loss and the held-out cases."""
    started = time.perf_counter()
    x, lengths = batch_cases(cases, patch)
    y = torch.as_tensor(targets, dtype=torch.long if task == "classification" else torch.float32)
    networks, report = [], []
    total_epochs = recipe.members * recipe.max_epochs
    bar = tqdm(total=total_epochs, desc="fit", unit="epoch", disable=not progress, leave=False)
    for member in range(recipe.members):
        rng = np.random.default_rng([seed, member])
        torch.manual_seed(int(rng.integers(2**31)))
        train, held = validation_split(targets, recipe.validation_size, rng, task == "classification")
        weights = balanced_weights(targets[train], outputs) if task == "classification" else None
        network = PooledRNN(x.shape[-1], outputs, recipe.hidden_size, num_layers=recipe.num_layers,
                            cell=recipe.cell, pooling=recipe.pooling, dropout=recipe.dropout)
        optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        loss_fn = _loss(task, weights)
        deadline = started + recipe.time_limit * (member + 1) / recipe.members
        best, best_epoch, best_state, epoch = math.inf, 0, None, 0
        batch_size = min(recipe.batch_size, max(len(train) // 4, 1))
        if len(held):
            held_x, held_lengths = x[held, :int(lengths[held].max())], lengths[held]
        for epoch in range(1, recipe.max_epochs + 1):
            epoch_started = time.perf_counter()
            order = train[rng.permutation(len(train))]
            for start in range(0, len(order), batch_size):
                pick = torch.as_tensor(order[start:start + batch_size])
                steps = int(lengths[pick].max())                      # the batch's own longest case
                loss = loss_fn(network(x[pick, :steps], lengths[pick]), y[pick])
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(network.parameters(), 1.0)
                optimizer.step()
            bar.update(1)
            if len(held):
                score = _evaluate(network, loss_fn, held_x, held_lengths, y[held], 256)
                if score < best:
                    best, best_epoch, best_state = score, epoch, copy.deepcopy(network.state_dict())
                bar.set_postfix(member=member + 1, validation=f"{best:.4f}", refresh=False)
                if epoch - best_epoch >= recipe.patience:
                    break
            now = time.perf_counter()
            if now + (now - epoch_started) > deadline:                # another epoch would overrun the budget
                break
        bar.update(recipe.max_epochs - epoch)
        if best_state is not None:
            network.load_state_dict(best_state)
        network.eval()
        networks.append(network)
        report.append({"epochs": epoch, "best_epoch": best_epoch if len(held) else epoch,
                       "validation_loss": best if len(held) else None, "validation_cases": held.tolist()})
    bar.close()
    return networks, report


def predict_members(networks: list, cases: list, patch: int, task: str, batch_size: int = 256) -> np.ndarray:
    """The members' averaged outputs: class probabilities (N, K), or values (N, outputs)."""
    total = None
    with torch.no_grad():
        for start in range(0, len(cases), batch_size):
            x, lengths = batch_cases(cases[start:start + batch_size], patch)
            outs = [network(x, lengths) for network in networks]
            outs = [torch.softmax(o, -1) if task == "classification" else o for o in outs]
            part = torch.stack(outs).mean(0).double().numpy()
            total = part if total is None else np.concatenate([total, part])
    return total
