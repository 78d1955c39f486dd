"""The real tensors of experiments/real_datasets.py and the splits of bench_real.py."""
import numpy as np
import pytest

from experiments.bench_real import make_split, nmse
from experiments.real_datasets import DATASETS, load

#: the package each loader reads its files from (the experiments extra)
_PACKAGE = {"kinetic": "tensorly", "indian_pines": "tensorly", "il2": "tensorly",
            "digits": "sklearn", "astronaut": "skimage", "us_employment": "vega_datasets",
            "sf_temps": "vega_datasets"}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_dataset_is_a_nonnegative_tensor_that_names_its_source(name):
    pytest.importorskip(_PACKAGE[name])
    tensor, info = load(name)
    assert tensor.ndim >= 3 and tensor.dtype == np.float64
    measured = tensor[~np.isnan(tensor)]
    assert measured.size == info["n_measured"] > 0
    assert np.all(measured >= 0) and np.max(measured) > 0
    assert info["kind"] and info["source"] and info["licence"]
    assert info["shape"] == tensor.shape


def test_a_split_holds_out_every_other_measured_entry_disjointly():
    rng = np.random.default_rng(0)
    tensor = rng.random((6, 5, 4))
    tensor[0, 0, :] = np.nan
    X, held, values = make_split(tensor, 0.3, seed=2)
    observed = ~np.isnan(X)
    assert observed.sum() == round(0.3 * np.sum(~np.isnan(tensor)))
    assert not observed[tuple(held.T)].any()  # disjoint
    assert observed.sum() + len(held) == np.sum(~np.isnan(tensor))  # and together: all
    assert np.array_equal(values, tensor[tuple(held.T)])
    X2, held2, _ = make_split(tensor, 0.3, seed=2)
    assert np.array_equal(held, held2) and np.array_equal(np.isnan(X), np.isnan(X2))
    assert nmse(values, values) == 0.0 and nmse(np.full_like(values, np.nan), values) == np.inf


def test_the_table_criteria_are_medians_over_splits_against_the_fastest_comparable_peer():
    from experiments.bench_real import dataset_criteria

    def rec(nmse_, time_s):
        return {"nmse": nmse_, "time_s": time_s}

    mine = {0: rec(1.0, 10.0), 1: rec(2.0, 20.0), 2: rec(1.2, 4.0)}
    peers = {0: [rec(0.5, 1.0), rec(0.52, 0.5), rec(2.0, 0.1)],   # fastest within 5 %: 0.5 s
             1: [rec(4.0, 3.0), rec(float("inf"), 0.01)],        # none within 5 % of ours
             2: [rec(1.0, 2.0), rec(1.2, 1.0)]}                  # 2.0 s (1.2 > 1.05 x 1.0)
    c = dataset_criteria(mine, peers, [0, 1, 2])
    assert c["splits"] == 3
    assert c["nmse_ratio"] == pytest.approx(1.2)                 # median of 2, 0.5, 1.2
    assert c["time_ratio"] == pytest.approx(10.0 / np.median([0.5, 2.0]))
    assert np.isnan(dataset_criteria({0: rec(1.0, 1.0)}, {0: [rec(3.0, 1.0)]}, [0])["time_ratio"])
