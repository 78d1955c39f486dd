"""Active set with cached quadratic products (docs/method.md, "Problem": quadratic structure).

Atoms are stored by their bits ``theta`` and their support on the observed entries. With
G_jl = sum_x m_x a_j[x] a_l[x] and h_j = sum_x s_x a_j[x] cached, the objective, the products
<grad f, a_j> and every line search cost O(m^2) and never touch the data; only a new atom costs a
pass over the observed entries (its support and one Gram row).

All weight writes go through ``set_weights`` (one path that purges, renormalises and keeps the
caches valid).
"""
from __future__ import annotations

import math

import numpy as np

from tensorcomp.oracles.base import atom_offsets, observed_bit_mask, trivial_lower_bound

from . import _kernels as K
from .numerics import WEIGHT_PURGE, check_finite
from .observations import Observations

#: rows of support storage reserved at once (virtual memory until written; see ``_grow``)
SUPPORT_ROWS = 64

__all__ = ["ActiveSet", "DenseVertexActiveSet", "SparseVertexActiveSet", "STORAGES"]


class ActiveSet:
    """Gram-cached storage (the default): no data pass in local steps."""

    storage = "gram"

    def __init__(self, obs: Observations, lam: float, *, signed: bool = False) -> None:
        self.obs = obs
        self.lam = float(lam)
        #: signed atoms: an atom's stored "support" is where the +-1 atom is +1 (its parity
        #: support); the solver then works in the affine image of that space (tensorcomp.signed)
        self.signed = bool(signed)
        self._support_kernel = K.parity_support if self.signed else K.atom_support
        #: (rho,) bool: the mode indices some observed entry uses
        self.observed_bits = observed_bit_mask(obs.entries, obs.shape)
        self.n = obs.n_samples
        self.offsets = atom_offsets(obs.shape)
        self.rho = int(self.offsets[-1])
        self._cap = 0
        self._thetas = np.zeros((0, self.rho), dtype=bool)
        #: supports as np.packbits rows: 1 bit per entry and atom (a bool row per atom would be
        #: 8x this, the largest solver state at 1e7 entries)
        self._packed = np.zeros((0, (obs.n_entries + 7) // 8), dtype=np.uint8)
        self._G = np.zeros((0, 0))
        self.m = 0
        self._gw = None  # G @ weights, carried along by the steps (see ``gram_weights``)
        self._gw_age = 0
        self.weights = np.zeros(0)
        self.h = np.zeros(0)
        self._keys: dict[bytes, int] = {}
        self._key_list: list[bytes] = []  # key of atom j, so a drop needs no recomputation
        #: bumped whenever the set of atoms changes (momentum-based steps restart on it)
        self.version = 0

    @property
    def counts_f(self) -> np.ndarray:
        """Multiplicities as float64 (computed on access: 8 bytes per entry not kept)."""
        return self.obs.counts.astype(np.float64)

    # -------------------------------------------------------------------------------- views
    @property
    def weights(self) -> np.ndarray:
        return self._weights

    @weights.setter
    def weights(self, w: np.ndarray) -> None:
        # every write replaces the array (nothing writes into it in place): the cached G @ w
        # stays valid exactly until the next assignment
        self._weights = w
        self._gw = None

    @property
    def thetas(self) -> np.ndarray:
        return self._thetas[: self.m]

    @property
    def supports(self) -> np.ndarray:
        """(m, u) bool, unpacked on access (the stored form is ``packed``)."""
        return K.unpack_supports(self._packed[: self.m], self.obs.n_entries)

    @property
    def packed(self) -> np.ndarray:
        """(m, ceil(u / 8)) uint8: the supports as ``np.packbits`` rows."""
        return self._packed[: self.m]

    @property
    def G(self) -> np.ndarray:
        return self._G[: self.m, : self.m]

    # -------------------------------------------------------------------------------- atoms
    def _grow(self) -> None:
        # np.zeros of a large array maps zero pages that become resident only when written:
        # reserving 64 rows costs memory only for the atoms actually stored, and the supports
        # (u / 8 bytes per atom) are copied only past 64 atoms, not at every doubling.
        cap = max(SUPPORT_ROWS, 2 * self._cap)
        u = self.obs.n_entries
        thetas = np.zeros((cap, self.rho), dtype=bool)
        packed = np.zeros((cap, (u + 7) // 8), dtype=np.uint8)
        G = np.zeros((cap, cap))
        thetas[: self.m] = self.thetas
        packed[: self.m] = self.packed
        G[: self.m, : self.m] = self.G
        self._thetas, self._packed, self._G, self._cap = thetas, packed, G, cap

    def find_or_add(self, theta: np.ndarray, support: np.ndarray | None = None) -> int:
        """Index of the atom (by its support on the observed entries), adding it with weight 0.
        ``support``: the atom's support when the caller has computed it already."""
        theta = np.asarray(theta, dtype=bool)
        # one stored form per atom: never-observed bits fixed (see start_atoms)
        theta = theta | ~self.observed_bits if self.signed else theta & self.observed_bits
        if support is None:
            support = self.support_of(theta)
        row = np.packbits(support)
        key = row.tobytes()
        j = self._keys.get(key)
        if j is not None:
            return j
        if self.m == self._cap:
            self._grow()
        j = self.m
        self._append(j, support)
        self._thetas[j] = theta
        self._packed[j] = row
        gw = self._gw
        self.weights = np.append(self.weights, 0.0)
        if gw is not None:  # the new atom has weight 0: one more product, O(m)
            self._set_gw(np.append(gw, self._G[j, :j] @ self.weights[:j]))
        self.m += 1
        self.version += 1
        self._keys[key] = j
        self._key_list.append(key)
        return j

    def start_atoms(self) -> tuple[np.ndarray, np.ndarray]:
        """(thetas, weights) of the first iterate. Bits of never-observed mode indices change
        no value on the data; they are kept fixed (0 for 0/1 atoms, +1 for signed ones) so that
        each support has one stored form. 0/1 atoms: the all-ones atom on the observed bits,
        as in the papers. Signed atoms: the all-(+1) atom and its negative (mode 0's observed
        bits flipped), half each: the zero tensor."""
        observed = self.observed_bits
        if not self.signed:
            return observed[None, :], np.ones(1)
        plus = np.ones(self.rho, dtype=bool)
        minus = plus.copy()
        minus[self.offsets[0]:self.offsets[1]] = ~observed[self.offsets[0]:self.offsets[1]]
        return np.stack([plus, minus]), np.full(2, 0.5)

    def free_bound(self, g: np.ndarray) -> float:
        """A proven lower bound on <g, a> over every atom a (0/1 support vectors):
        sum_x min(g_x, 0), shaded for its rounding."""
        return trivial_lower_bound(g)

    @staticmethod
    def value_of(g: np.ndarray, support: np.ndarray) -> float:
        """<g, a> for the atom with this support, summed by the caller's own code (an
        oracle's claimed value is never trusted)."""
        return float(g[support].sum())

    def support_of(self, theta: np.ndarray) -> np.ndarray:
        """bool (u,): the entries where the atom ``theta`` is 1 (+1 for signed atoms)."""
        return self._support_kernel(np.ascontiguousarray(theta, dtype=bool), self.obs.entries,
                                    self.offsets)

    def _append(self, j: int, support: np.ndarray) -> None:
        """Cache the new atom's Gram row and linear term (one pass over its support)."""
        on = np.flatnonzero(support)
        row = K.gram_row_packed(self.packed, on, self.obs.counts)
        self._G[j, :j] = row
        self._G[:j, j] = row
        self._G[j, j] = float(self.obs.counts[on].sum(dtype=np.int64))
        self.h = np.append(self.h, float(self.obs.sums[on].sum()))

    def _keep(self, keep: np.ndarray) -> np.ndarray:
        """Drop the atoms where ``keep`` is False by moving the last atoms into their slots:
        O(m + u) per dropped atom. (Compacting in order costs an O(m^2) Gram copy, an O(m u)
        support copy and an O(m u) key rebuild per drop: at m ~ 1e3 that bookkeeping took more
        time than the oracle and the data passes together.) Atom order is not meaningful.
        Returns the old index of each atom kept, in the new order."""
        w = self.weights
        order = np.arange(self.m)
        for j in np.flatnonzero(~keep)[::-1]:  # descending: the atoms moved in are all kept
            last = self.m - 1
            del self._keys[self._key_list[j]]
            if j != last:
                self._thetas[j] = self._thetas[last]
                self._packed[j] = self._packed[last]
                self._move_cache(last, j)
                w[j] = w[last]
                order[j] = order[last]
                self._key_list[j] = self._key_list[last]
                self._keys[self._key_list[j]] = j
            self._key_list.pop()
            self.m = last
        self.weights = w[: self.m].copy()
        self._truncate_cache()
        self.version += 1
        return order[: self.m]

    def _move_cache(self, src: int, dst: int) -> None:
        m = self.m
        self._G[dst, :m] = self._G[src, :m]
        self._G[:m, dst] = self._G[:m, src]
        self._G[dst, dst] = self._G[src, src]
        self.h[dst] = self.h[src]

    def _truncate_cache(self) -> None:
        self.h = self.h[: self.m].copy()

    # -------------------------------------------------------------------------------- weights
    def set_weights(self, weights: np.ndarray, gw: np.ndarray | None = None) -> int:
        """The one write path: clip round-off negatives, drop atoms at zero, renormalise.

        ``gw``: G @ weights when the caller has it (updated along its step in O(m)); it is
        carried through the purge and the renormalisation so the next products need no
        O(m^2) pass. Returns how many atoms were dropped.
        """
        w = np.asarray(weights, dtype=np.float64)
        keep = w > WEIGHT_PURGE  # False for NaN too: checked below
        total = float(w[keep].sum())
        if not (0.0 < total < math.inf):
            check_finite(w, "active-set weights")
            raise FloatingPointError("active-set weights vanished")
        if gw is not None and not keep.all():  # take the purged weights out of G w
            gone = np.flatnonzero(~keep)
            gw = gw - self._G[: self.m, gone] @ np.nan_to_num(w[gone])
        w = np.where(keep, w, 0.0)
        w /= total
        self.weights = w
        dropped = self.m - int(np.count_nonzero(keep))
        if dropped:
            if np.isnan(weights).any():
                check_finite(weights, "active-set weights")
            order = self._keep(keep)
            if gw is not None:
                gw = gw[order]
        if gw is not None:
            self._set_gw(gw / total)
        return dropped

    def step_to_atom(self, j: int, gamma: float) -> int:
        """w <- (1 - gamma) w + gamma e_j (a Frank-Wolfe step), G w updated in O(m)."""
        w = (1.0 - gamma) * self.weights
        w[j] += gamma
        gw = self._gw
        if gw is not None:
            gw = (1.0 - gamma) * gw + gamma * self._G[j, : self.m]
        return self.set_weights(w, gw)

    # -------------------------------------------------------------------------------- quadratic
    def gram_times(self, v: np.ndarray) -> np.ndarray:
        """G v in compiled serial code (see ``_kernels.gram_times`` for why not BLAS)."""
        return K.gram_times(self._G, self.m, np.ascontiguousarray(v, dtype=np.float64))

    #: incremental updates of G w between two exact recomputations (bounds its round-off drift
    #: to ~GW_REFRESH * 1e-16 relative; the solver's stop tests use exact data passes anyway)
    GW_REFRESH = 64

    def gram_weights(self) -> np.ndarray:
        """G @ weights (do not modify), recomputed only when no step carried it along. An
        iteration needs it several times (directional products, objective, the Frank-Wolfe
        step's curvature, the pairwise kernel's start); at m ~ 2e3 atoms recomputing those
        O(m^2) products each time took 60 % of a solve."""
        if self._gw is None:
            self._gw = self.gram_times(self.weights)
            self._gw_age = 0
        return self._gw

    def _set_gw(self, gw: np.ndarray) -> None:
        """Install G w for the current weights, computed incrementally by a step."""
        age = self._gw_age + 1
        if self.storage != "gram" or age > self.GW_REFRESH:
            self._gw = None  # recomputed exactly at the next use
        else:
            self._gw, self._gw_age = gw, age

    def directional(self, w: np.ndarray | None = None) -> np.ndarray:
        """<grad f(phi), a_j> for every active atom: (2 lam / n) (lam (G w)_j - h_j)."""
        gw = self.gram_weights() if w is None else self.gram_times(w)
        return (2.0 * self.lam / self.n) * (self.lam * gw - self.h)

    def objective_quadratic(self, w: np.ndarray | None = None) -> float:
        """f(w) from the cached products (round-off ~1e-16 * total_ss / n)."""
        if w is None:
            w, gw = self.weights, self.gram_weights()
        else:
            gw = self.gram_times(w)
        lam, obs = self.lam, self.obs
        return (obs.total_ss - 2 * lam * w @ self.h + lam * lam * w @ gw) / self.n

    def curvature(self, d: np.ndarray) -> float:
        """d^T H d with H = (2 lam^2 / n) G, the exact second derivative along d (weight space)."""
        return (2.0 * self.lam**2 / self.n) * float(d @ self.gram_times(d))

    def curvature_to_atom(self, j: int) -> float:
        """``curvature(e_j - w)``. With the Gram cache, in O(m) from the cached G w:
        G_jj - 2 (G w)_j + w^T G w. The three terms cancel when w is near e_j; then (and only
        then), as for the storages without a Gram cache, the direction is built and
        ``curvature`` evaluates it, so the line search never sees a curvature lost to
        cancellation."""
        if self.storage == "gram":
            gw, w = self.gram_weights(), self.weights
            wgw = float(w @ gw)
            gjj = float(self._G[j, j])
            c = gjj - 2.0 * float(gw[j]) + wgw
            if c > 1e-6 * (gjj + wgw):
                return (2.0 * self.lam**2 / self.n) * c
        d = -self.weights.copy()
        d[j] += 1.0
        return self.curvature(d)

    # -------------------------------------------------------------------------------- data passes
    def data_pass(self) -> tuple[float, np.ndarray, float, float]:
        """(exact f, gradient g, <g, phi>, sum |g|) in one compiled pass; phi is not stored.
        Per entry the expressions of ``point``, ``gradient``, ``objective_exact``."""
        obs = self.obs
        g = np.empty(obs.n_entries, dtype=np.float64)
        rss, gphi, gabs = K.data_pass(self.packed, self.weights, obs.sums, obs.counts,
                                      self.lam, float(self.n), g)
        return (obs.within_ss + rss) / self.n, g, gphi, gabs

    def objective(self) -> float:
        """Exact f at the current iterate (the data pass; 8 bytes per entry of scratch, where
        ``objective_exact(point())`` allocates ~5 float arrays)."""
        return self.data_pass()[0]

    def point(self) -> np.ndarray:
        """phi on the observed entries (u,)."""
        return K.point_on_entries_packed(self.packed, self.weights, self.obs.n_entries)

    def objective_exact(self, phi: np.ndarray) -> float:
        """f from phi without cancellation: (within SS + sum m_x (mean_x - lam phi_x)^2) / n."""
        r = self.obs.means - self.lam * phi
        # elementwise, not a BLAS dot: see refine._objective (threaded ddot above 1e4 entries)
        return (self.obs.within_ss + float(np.sum(self.counts_f * (r * r)))) / self.n

    def gradient(self, phi: np.ndarray) -> np.ndarray:
        """grad f on the observed entries: (2 lam / n) (lam m_x phi_x - s_x)."""
        return (2.0 * self.lam / self.n) * (self.lam * self.counts_f * phi - self.obs.sums)

    # -------------------------------------------------------------------------------- debug
    def check(self, atol: float = 1e-9) -> None:
        """Invariants: weights >= 0 summing to 1; G, h and supports equal a recomputation."""
        w = self.weights
        assert w.shape == (self.m,)
        assert np.all(w >= 0), "negative weight"
        assert abs(w.sum() - 1.0) <= 1e-12, f"weights sum to {w.sum()!r}"
        twin = K.parity_support_numpy if self.signed else K.atom_support_numpy
        S = np.stack([twin(t, self.obs.entries, self.offsets) for t in self.thetas])
        assert np.array_equal(S, self.supports), "stale support"
        Sf = S.astype(np.float64)
        G = (Sf * self.counts_f) @ Sf.T
        assert np.allclose(self.G, G, rtol=0, atol=atol * max(1.0, G.max())), "stale Gram matrix"
        h = Sf @ self.obs.sums
        assert np.allclose(self.h, h, rtol=1e-12, atol=atol * (1 + np.abs(h).max())), "stale h"
        if self._gw is not None:  # the G w carried along by the steps
            gw = G @ w
            assert np.allclose(self._gw, gw, rtol=0, atol=atol * (1 + np.abs(gw).max())), \
                "stale G w"


class DenseVertexActiveSet(ActiveSet):
    """The papers' storage: the projected vertex matrix V (u x m, float64) and no cached
    products, so every objective, gradient product and line search is an O(u m) pass.
    Kept as a variant to measure what the Gram cache buys."""

    storage = "dense"

    def __init__(self, obs: Observations, lam: float, *, signed: bool = False) -> None:
        super().__init__(obs, lam, signed=signed)
        self._V = np.zeros((obs.n_entries, 0))

    def _append(self, j: int, support: np.ndarray) -> None:
        self._V = np.hstack([self._V, support.astype(np.float64)[:, None]])

    def _keep(self, keep: np.ndarray) -> None:
        """In-order compaction (the papers' storage keeps its column order; its cost is the
        point of the variant)."""
        idx = np.flatnonzero(keep)
        m = idx.size
        self._thetas[:m] = self._thetas[idx]
        self._packed[:m] = self._packed[idx]
        self._V = self._V[:, idx]
        self.weights = self.weights[idx]
        self.m = m
        self.version += 1
        self._key_list = [self._key_list[j] for j in idx]
        self._keys = {key: j for j, key in enumerate(self._key_list)}
        return idx

    @property
    def G(self) -> np.ndarray:  # only for check(): recomputed, never cached
        return (self._V * self.counts_f[:, None]).T @ self._V

    @property
    def h(self) -> np.ndarray:
        return self._V.T @ self.obs.sums

    @h.setter
    def h(self, value) -> None:  # the base constructor assigns it; nothing is cached here
        pass

    def _phi(self, w: np.ndarray) -> np.ndarray:
        return self._V @ w

    def data_pass(self) -> tuple[float, np.ndarray, float, float]:
        """The papers' storage keeps its own pass (V w, then the gradient): what it costs is
        what the variant measures."""
        phi = self.point()
        g = self.gradient(phi)
        return self.objective_exact(phi), g, float(g @ phi), float(np.abs(g).sum())

    def gram_times(self, v: np.ndarray) -> np.ndarray:
        return self.G @ v

    def directional(self, w: np.ndarray | None = None) -> np.ndarray:
        w = self.weights if w is None else w
        return self._V.T @ self.gradient(self._phi(w))

    def objective_quadratic(self, w: np.ndarray | None = None) -> float:
        return self.objective_exact(self._phi(self.weights if w is None else w))

    def curvature(self, d: np.ndarray) -> float:
        v = self._phi(d)
        return (2.0 * self.lam**2 / self.n) * float(self.counts_f @ (v * v))

    def point(self) -> np.ndarray:
        return self._phi(self.weights)


class SparseVertexActiveSet(DenseVertexActiveSet):
    """The papers' sparse variant: V as a scipy CSC matrix, rebuilt on every change."""

    storage = "sparse"

    def __init__(self, obs: Observations, lam: float, *, signed: bool = False) -> None:
        from scipy import sparse
        self._sparse = sparse
        super().__init__(obs, lam, signed=signed)
        self._V = sparse.csc_matrix((obs.n_entries, 0))

    def _append(self, j: int, support: np.ndarray) -> None:
        col = self._sparse.csc_matrix(support.astype(np.float64)[:, None])
        self._V = self._sparse.hstack([self._V, col], format="csc")

    @property
    def G(self) -> np.ndarray:
        Vd = self._V.toarray()
        return (Vd * self.counts_f[:, None]).T @ Vd

    def _phi(self, w: np.ndarray) -> np.ndarray:
        return np.asarray(self._V @ w).ravel()

    def directional(self, w: np.ndarray | None = None) -> np.ndarray:
        w = self.weights if w is None else w
        return np.asarray(self._V.T @ self.gradient(self._phi(w))).ravel()


STORAGES = {"gram": ActiveSet, "dense": DenseVertexActiveSet, "sparse": SparseVertexActiveSet}
