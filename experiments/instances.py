"""Problem instances: what every method sees (training observations) and what it is scored on.

Synthetic ("published"): docs/method.md, "Published protocol", exactly, repetition k = default_rng(k). Methods see the n
samples; the truth is kept in CP form, so errors over all entries and over the never-observed
entries are exact (metrics.py) without the dense tensor.

Real data ("il2"): tensorly's IL-2 response tensor, shape (13 ligands, 4 times, 12 doses, 8 cell
types), 4800 measured entries and 192 genuinely missing ones (NaN). The run's seed hides
``holdout_fraction`` of the measured entries from every method; they are the held-out test set.
The values lie in [0, 1] in tensorly 0.10; should a version ship negative values, they are clipped
to 0 (the method needs a nonnegative target) and the count is recorded in the instance info.

Baselines receive a ``MaskedData``: the training entries and their values, from which the
zero-filled tensor and the mask are built on request. It holds nothing else, so no baseline can
read an unobserved or held-out value.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tensorcomp import Observations
from tensorcomp.synthetic import PlantedTensor, published_instance

from .config import DATASETS

__all__ = ["Instance", "MaskedData", "build_instance", "load_dataset"]


@dataclass(frozen=True)
class MaskedData:
    """The observed entries only: distinct ``indices`` (u, p), their mean ``values`` and sample
    ``counts``. Dense views are built on request (baselines that need them say so)."""

    shape: tuple
    indices: np.ndarray
    values: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_observations(cls, obs: Observations) -> "MaskedData":
        return cls(tuple(obs.shape), obs.entries.copy(), obs.means.copy(), obs.counts.copy())

    @property
    def n_entries(self) -> int:
        return int(np.prod(self.shape))

    def mask(self) -> np.ndarray:
        m = np.zeros(self.shape, dtype=bool)
        m[tuple(self.indices.T)] = True
        return m

    def zero_filled(self) -> np.ndarray:
        t = np.zeros(self.shape)
        t[tuple(self.indices.T)] = self.values
        return t

    def split(self, fraction: float, seed: int) -> tuple["MaskedData", np.ndarray, np.ndarray]:
        """Hold out ``fraction`` of the entries: (rest, held-out indices, held-out values)."""
        rng = np.random.default_rng(seed)
        u = self.indices.shape[0]
        held = np.zeros(u, dtype=bool)
        held[rng.choice(u, size=max(1, int(round(fraction * u))), replace=False)] = True
        rest = MaskedData(self.shape, self.indices[~held], self.values[~held], self.counts[~held])
        return rest, self.indices[held], self.values[held]


@dataclass
class Instance:
    id: str
    shape: tuple
    train: Observations                    # what the methods see
    truth: PlantedTensor | None = None     # synthetic: exact truth everywhere
    heldout_indices: np.ndarray | None = None  # real data: hidden measured entries
    heldout_values: np.ndarray | None = None
    rank: int | None = None                # the true (or declared) rank given to baselines
    info: dict = field(default_factory=dict)

    def masked_data(self) -> MaskedData:
        return MaskedData.from_observations(self.train)


def load_dataset(name: str) -> tuple[np.ndarray, dict]:
    """(tensor with NaN for missing entries, info). Values made nonnegative (see module doc)."""
    if name != "il2":
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    from tensorly.datasets import load_IL2data  # optional dependency: experiments extra
    tensor = np.array(load_IL2data().tensor, dtype=np.float64)
    if tensor.shape != DATASETS[name]:
        raise ValueError(f"IL2 tensor has shape {tensor.shape}, expected {DATASETS[name]}")
    negative = np.nan_to_num(tensor, nan=0.0) < 0
    tensor[negative] = 0.0
    info = {"n_missing": int(np.isnan(tensor).sum()), "n_clipped_negative": int(negative.sum())}
    return tensor, info


def build_instance(spec: dict, seed: int) -> Instance:
    if spec["kind"] == "published":
        truth, obs = published_instance(tuple(spec["shape"]), spec["n"], seed,
                                        n_atoms=spec["rank"])
        return Instance(spec["id"], tuple(spec["shape"]), obs, truth=truth, rank=spec["rank"],
                        info={"n_samples": obs.n_samples, "n_observed_entries": obs.n_entries})
    tensor, info = load_dataset(spec["dataset"])
    measured = np.argwhere(~np.isnan(tensor))
    values = tensor[tuple(measured.T)]
    rng = np.random.default_rng(seed)
    n_hold = int(round(spec["holdout_fraction"] * len(measured)))
    held = np.zeros(len(measured), dtype=bool)
    held[rng.choice(len(measured), size=n_hold, replace=False)] = True
    train = Observations(measured[~held], values[~held], tensor.shape)
    info.update(n_measured=int(len(measured)), n_heldout=n_hold, n_train=int((~held).sum()))
    return Instance(spec["id"], tensor.shape, train, heldout_indices=measured[held],
                    heldout_values=values[held], rank=spec.get("rank"), info=info)
