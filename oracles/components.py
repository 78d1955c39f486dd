"""Exact decomposition of the oracle over connected components of the observation hypergraph.

Nodes are the observed mode indices (k, j); every observed entry joins its p nodes. An atom's
value on an entry depends only on the bits of that entry's nodes, so <c, v> is a sum of
independent terms, one per component: the minimum is the sum of the per-component minima, and
per-component proven bounds add up to a proven bound.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .base import OracleAnswer, SeparationQuery, Timer, atom_offsets, trivial_lower_bound

__all__ = ["entry_components", "ComponentOracle"]


def entry_components(indices: np.ndarray, shape) -> tuple[int, np.ndarray]:
    """(number of components, component label of each entry).

    scipy's compiled connected_components instead of a Python graph library: at 1e6 entries
    x 9 modes a Python-object graph costs minutes and gigabytes.
    """
    offsets = atom_offsets(shape)
    u, p = indices.shape
    nodes = indices + offsets[:-1]  # global node id of each (entry, mode)
    rows = np.repeat(nodes[:, 0], p - 1) if p > 1 else nodes[:, 0]
    cols = nodes[:, 1:].ravel() if p > 1 else nodes[:, 0]
    n_nodes = int(offsets[-1])
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n_nodes, n_nodes))
    _, node_label = connected_components(graph, directed=False)
    entry_label = node_label[nodes[:, 0]]
    _, entry_label = np.unique(entry_label, return_inverse=True)
    return int(entry_label.max()) + 1, entry_label.astype(np.int64)


class _Block:
    """One component: its entries, and the map from its local bits to the global bits."""

    def __init__(self, entries_pos, indices, shape, factory):
        self.entries_pos = entries_pos
        sub = indices[entries_pos]
        offsets = atom_offsets(shape)
        local_cols, sub_shape, global_bits = [], [], []
        for k in range(indices.shape[1]):
            used, local = np.unique(sub[:, k], return_inverse=True)
            local_cols.append(local)
            sub_shape.append(used.size)
            global_bits.append(offsets[k] + used)
        self.sub_indices = np.stack(local_cols, axis=1).astype(np.int64)
        self.sub_shape = tuple(sub_shape)
        self.global_bits = np.concatenate(global_bits)
        self.oracle = factory(self.sub_indices, self.sub_shape)

    def to_local(self, theta: np.ndarray) -> np.ndarray:
        return theta[self.global_bits]


class ComponentOracle:
    """Runs ``factory(sub_indices, sub_shape)`` oracles per component and combines them."""

    def __init__(self, indices: np.ndarray, shape, factory, labels=None) -> None:
        self.shape = tuple(shape)
        self.rho = int(sum(shape))
        if labels is None:
            _, labels = entry_components(indices, shape)
        order = np.argsort(labels, kind="stable")
        cuts = np.flatnonzero(np.diff(labels[order])) + 1
        self.blocks = [_Block(pos, indices, shape, factory) for pos in np.split(order, cuts)]
        probe = self.blocks[0].oracle
        self.name = getattr(probe, "name", "oracle")
        self.certifies = bool(getattr(probe, "certifies", False))

    def separate(self, query: SeparationQuery) -> OracleAnswer:
        timer = Timer()
        c = query.direction
        # start: the zero atom on every block (value 0) and the free bound
        values = np.zeros(len(self.blocks))
        bounds = np.array([trivial_lower_bound(c[b.entries_pos]) for b in self.blocks])
        theta = np.zeros(self.rho, dtype=bool)
        ip_calls, ip_time, failures, statuses, exact = 0, 0.0, [], [], True
        for i, block in enumerate(self.blocks):
            if values.sum() <= query.target or bounds.sum() >= query.certify_level:
                exact = False
                break
            hints = None
            if query.hints is not None and len(query.hints):
                hints = np.ascontiguousarray(query.hints[:, block.global_bits])
            sub = SeparationQuery(
                direction=np.ascontiguousarray(c[block.entries_pos]),
                current_value=float(values[i]),
                target=query.target - (values.sum() - values[i]),
                certify_level=query.certify_level - (bounds.sum() - bounds[i]),
                deadline=query.deadline,
                hints=hints, exact_allowed=query.exact_allowed, interrupt=query.interrupt,
            )
            ans = block.oracle.separate(sub)
            ip_calls += ans.ip_calls
            ip_time += ans.ip_time_s
            failures += ans.failures
            statuses.append(ans.status)
            exact = exact and ans.exact
            if ans.theta is not None and ans.value < values[i]:
                values[i] = ans.value
                theta[block.global_bits] = ans.theta
            bounds[i] = max(bounds[i], min(ans.lower_bound, values[i]))
            if ans.status == "userinterrupt":
                break
        total_bound = float(bounds.sum())
        return OracleAnswer(
            theta=theta, value=float(values.sum()),
            lower_bound=total_bound if self.certifies else -math.inf,
            source=self.name, time_s=timer.elapsed(),
            status=statuses[-1] if statuses else "",
            exact=exact and len(statuses) == len(self.blocks),
            ip_calls=ip_calls, ip_time_s=ip_time, failures=failures,
        )
