"""Per-component oracle decomposition: components agree with networkx; the split is exact."""
import networkx as nx
import numpy as np
import pytest

from tensorcomp.oracles.base import SeparationQuery, atom_dot
from tensorcomp.oracles.components import ComponentOracle, entry_components
from tensorcomp.oracles.exhaustive import ExhaustiveOracle
from tensorcomp.oracles.scip import ScipOracle


def random_sparse_entries(rng, shape, n):
    idx = np.stack([rng.integers(0, r, n) for r in shape], 1)
    return np.unique(idx, axis=0)


@pytest.mark.parametrize("seed", range(10))
def test_components_match_networkx(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(2, 30, size=rng.integers(2, 5)))
    idx = random_sparse_entries(rng, shape, int(rng.integers(1, 40)))
    n_comp, labels = entry_components(idx, shape)
    graph = nx.Graph()
    for e, row in enumerate(idx):
        nodes = [("mode", k, int(j)) for k, j in enumerate(row)]
        graph.add_node(("entry", e))
        graph.add_edges_from((("entry", e), v) for v in nodes)
    comps = [c for c in nx.connected_components(graph)]
    assert n_comp == len(comps)
    for comp in comps:
        members = [v[1] for v in comp if v[0] == "entry"]
        assert len(set(labels[members])) == 1
    assert len(set(labels)) == n_comp


@pytest.mark.parametrize("factory", [ExhaustiveOracle, ScipOracle])
@pytest.mark.parametrize("seed", range(5))
def test_split_oracle_is_exact(factory, seed):
    rng = np.random.default_rng(100 + seed)
    shape = (6, 6, 3)
    idx = random_sparse_entries(rng, shape, 9)
    n_comp, _ = entry_components(idx, shape)
    c = rng.standard_normal(len(idx))
    split = ComponentOracle(idx, shape, factory)
    q = SeparationQuery(direction=c, current_value=0.0, target=-np.inf, certify_level=np.inf)
    ans = split.separate(q)
    exact = ExhaustiveOracle(idx, shape).minimise(c)[1]
    assert ans.value == pytest.approx(exact, abs=1e-9)
    assert ans.value == pytest.approx(atom_dot(c, ans.theta, idx, shape), abs=1e-12)
    assert ans.lower_bound <= exact
    assert ans.lower_bound >= exact - 1e-4 * (1 + np.abs(c).sum())  # shaded, not loose
    assert len(split.blocks) == n_comp
