"""Small dataclass configs that save to JSON and load back strictly."""
from __future__ import annotations

from dataclasses import asdict, fields


class DictConfig:
    """Mixin for dataclasses: ``to_dict()`` and ``from_dict()``, where unknown keys are an error
    (a checkpoint from another version should fail loudly, not load half of itself)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**values)
