"""Brute-force ground truth on tiny tensors, independent of the library.

Nothing here imports tensorcomp or oracles: the samples are aggregated with a dict, every atom is
enumerated with itertools, and the small QP is solved by Wolfe's minimum-norm-point algorithm
(a finite active-set method, nothing like the library's conditional gradients). The optimum is
returned as a bracket [lower, upper]: upper is the objective of the QP solution, lower subtracts
its exact Frank-Wolfe gap over all atoms (a proof by convexity).
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np


class Samples(NamedTuple):
    """Raw observations: indices (n, p) ints, values (n,), shape."""

    indices: np.ndarray
    values: np.ndarray
    shape: tuple


def all_entries(shape) -> np.ndarray:
    return np.array(list(itertools.product(*[range(r) for r in shape])), dtype=np.int64)


def aggregate(samples: Samples):
    """Distinct entries (sorted tuples), multiplicities, value sums, within-entry sum of squares,
    total sum of squares, number of samples."""
    groups: dict[tuple, list[float]] = {}
    for row, y in zip(np.asarray(samples.indices).tolist(), np.asarray(samples.values).tolist()):
        groups.setdefault(tuple(row), []).append(float(y))
    keys = sorted(groups)
    counts = np.array([len(groups[k]) for k in keys], dtype=float)
    sums = np.array([sum(groups[k]) for k in keys])
    within = sum(sum((y - s / len(v)) ** 2 for y in v) for v, s in
                 ((groups[k], sum(groups[k])) for k in keys))
    total = sum(y * y for v in groups.values() for y in v)
    return keys, counts, sums, float(within), float(total), len(samples.values)


def atom_vectors(entries, shape) -> np.ndarray:
    """Every atom's 0/1 values on the given entries, duplicates removed: (V, u), rows sorted.

    Mode by mode: the values of every bit pattern of mode k on the entries (one row per
    pattern, duplicates dropped: only the observed indices matter), combined with the rows so
    far by an elementwise AND (an atom's value is the product of its modes' bits)."""
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, len(shape))
    rows = np.ones((1, entries.shape[0]), dtype=bool)
    for k, r in enumerate(shape):
        patterns = np.array(list(itertools.product((False, True), repeat=r)), dtype=bool)
        mode_rows = np.unique(patterns[:, entries[:, k]], axis=0)
        rows = np.unique((rows[:, None, :] & mode_rows[None, :, :]).reshape(-1, rows.shape[1]),
                         axis=0)
    return rows.astype(float)


def atom_vectors_slow(entries, shape) -> np.ndarray:
    """The same set as ``atom_vectors`` by the definition, one atom at a time (a cross-check on
    tiny shapes)."""
    per_mode = [list(itertools.product((0, 1), repeat=r)) for r in shape]
    rows = set()
    for bits in itertools.product(*per_mode):
        rows.add(tuple(int(all(bits[k][x[k]] for k in range(len(shape)))) for x in entries))
    return np.array(sorted(rows), dtype=float)


def signed_atom_vectors(entries, shape) -> np.ndarray:
    """Every +-1 atom's values on the given entries, duplicates removed: (V, u). Mode by mode,
    as ``atom_vectors``, with the product of the modes' signs in place of the AND."""
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, len(shape))
    rows = np.ones((1, entries.shape[0]))
    for k, r in enumerate(shape):
        patterns = np.array(list(itertools.product((-1.0, 1.0), repeat=r)))
        mode_rows = np.unique(patterns[:, entries[:, k]], axis=0)
        rows = np.unique((rows[:, None, :] * mode_rows[None, :, :]).reshape(-1, rows.shape[1]),
                         axis=0)
    return rows


def signed_atom_vectors_slow(entries, shape) -> np.ndarray:
    """The same set by the definition, one sign pattern at a time."""
    per_mode = [list(itertools.product((-1, 1), repeat=r)) for r in shape]
    rows = set()
    for signs in itertools.product(*per_mode):
        rows.add(tuple(int(np.prod([signs[k][x[k]] for k in range(len(shape))]))
                       for x in entries))
    return np.array(sorted(rows), dtype=float)


def min_norm_point(points: np.ndarray, max_iter: int = 10_000) -> np.ndarray:
    """Wolfe (1976): convex weights w over the rows of ``points`` minimising |w @ points|."""
    V = points.shape[0]
    j = int(np.argmin((points * points).sum(1)))
    active, w = [j], np.array([1.0])
    for _ in range(max_iter):
        x = w @ points[active]
        scores = points @ x
        j = int(np.argmin(scores))
        if x @ x - scores[j] <= 1e-15 * max(1.0, np.abs(points).max() ** 2) or j in active:
            break
        active.append(j)
        w = np.append(w, 0.0)
        while True:  # minor cycle: affine minimiser of the active set, stepped back into it
            P = points[active]
            k = len(active)
            K = np.zeros((k + 1, k + 1))
            K[:k, :k] = P @ P.T
            K[:k, k] = K[k, :k] = 1.0
            rhs = np.zeros(k + 1)
            rhs[k] = 1.0
            v = np.linalg.lstsq(K, rhs, rcond=None)[0][:k]
            if np.all(v > 1e-14):
                w = v
                break
            neg = v <= 1e-14
            theta = np.min(w[neg] / (w[neg] - v[neg]))
            w = w + theta * (v - w)
            keep = w > 1e-14
            active = [a for a, kp in zip(active, keep) if kp]
            w = w[keep] / w[keep].sum()
    out = np.zeros(V)
    out[active] = w
    return out


def optimum(samples: Samples, lam: float, atoms: str = "binary") -> tuple[float, float]:
    """(upper, lower) bracket of min (1/n) sum_i (y_i - psi[x_i])^2 over ||psi||_+ <= lam, the
    gauge of the 0/1 atoms ("binary") or of the +-1 atoms ("signed")."""
    keys, m, s, within, _, n = aggregate(samples)
    means = s / m
    A = (atom_vectors if atoms == "binary" else signed_atom_vectors)(keys, samples.shape)
    root = np.sqrt(m)
    # (1/n) sum_x m_x (mean_x - lam phi_x)^2 = |lam root*phi - root*mean|^2 / n
    points = lam * A * root - root * means
    # the minimiser's weights do not depend on the scale; Wolfe's affine solves do: at large
    # lam (points ~ 1e5) the bordered Gram system mixed 1e10 with the 1s of its border
    w = min_norm_point(points / max(float(np.abs(points).max()), np.finfo(float).tiny))
    phi = w @ A

    def f(ph):
        r = means - lam * ph
        return (within + m @ (r * r)) / n

    g = (2 * lam / n) * (lam * m * phi - s)
    fw_gap = float(g @ phi - (A @ g).min())
    upper = f(phi)
    return upper, upper - max(fw_gap, 0.0)


def objective(samples: Samples, predict) -> float:
    """(1/n) sum_i (y_i - predict(x_i))^2 for a prediction function on (n, p) indices."""
    pred = np.asarray(predict(np.asarray(samples.indices)))
    r = np.asarray(samples.values) - pred
    return float(r @ r) / len(r)


# ---- signed atoms: values and the exact minimum of a linear function, by enumeration --------

def signed_values(theta, indices, shape) -> np.ndarray:
    """(u,) float values +-1 of the signed atom with bits ``theta`` (1: +1, 0: -1)."""
    off = np.concatenate([[0], np.cumsum(shape)]).astype(int)
    a = np.ones(len(indices))
    for k in range(len(shape)):
        a = a * np.where(np.asarray(theta)[off[k] + indices[:, k]], 1.0, -1.0)
    return a


def signed_value(c, theta, indices, shape) -> float:
    """<c, a> for the signed atom with bits ``theta``."""
    return float((np.asarray(c, dtype=float) * signed_values(theta, indices, shape)).sum())


def signed_minimum(c, indices, shape) -> float:
    """min <c, a> over every signed atom, by enumeration of all sign vectors."""
    blocks = [np.array(list(itertools.product((0, 1), repeat=r)), dtype=bool) for r in shape]
    return min(signed_value(c, np.concatenate(combo), indices, shape)
               for combo in itertools.product(*blocks))


def entries_with_gaps(shape, rng, fraction) -> np.ndarray:
    """A random subset of the cells of ``shape`` that never uses the last index of mode 0
    (when it has more than one index), so that some bits are unobserved."""
    cells = np.array(list(itertools.product(*[range(r) for r in shape])), dtype=np.int64)
    if shape[0] > 1:
        cells = cells[cells[:, 0] != shape[0] - 1]
    u = max(1, int(round(fraction * len(cells))))
    return cells[np.sort(rng.choice(len(cells), u, replace=False))]


def oracle_directions(u, rng, mixed_scales: bool = False) -> dict:
    """Directions c of the oracle tests by kind: Gaussian, integer ties, half zeros, all
    positive, tiny, huge and (``mixed_scales``) entries 15 orders of magnitude apart. Drawn
    from ``rng`` in this order."""
    out = {
        "gaussian": rng.standard_normal(u),
        "integer_ties": rng.integers(-2, 3, size=u).astype(float),
        "zeros": rng.standard_normal(u) * (rng.random(u) < 0.5),
        "positive": np.abs(rng.standard_normal(u)) + 0.1,
        "tiny": 1e-7 * rng.standard_normal(u),
        "huge": 1e5 * rng.standard_normal(u),
    }
    if mixed_scales:
        out["mixed_scales"] = rng.standard_normal(u) * np.where(rng.random(u) < 0.3, 1e6, 1e-9)
    return out
