"""The pipeline stops when its answer stops improving: the lambda path ends on a validation
plateau, the refinement's rank is bounded by the observed entries, and a final convex fit the
pipeline caps says so (never a certificate it did not prove)."""
import math

import numpy as np

from tensorcomp import Observations, complete
from tensorcomp import fitting
from tensorcomp.oracles.deadline import Deadline
from tensorcomp.progress import Progress
from tensorcomp.selection import LAM_PATIENCE, LamSearch, data_rank_bound


class _ScriptedSearch(LamSearch):
    """A lambda search whose fits return scripted validation errors (no solve)."""

    def __init__(self, errors, se):
        super().__init__(None, 0, {}, Deadline(None), Progress(False, False, None))
        self.errors, self.se_value = list(errors), se

    def fit(self, lam, warm):
        err = self.errors[len(self.path)]
        self.path.append((lam, err, 0.0, "optimal"))
        self.se[lam] = self.se_value
        self.fits[lam] = object()
        if err < self.best[0]:
            self.best = (err, lam)
        return err


def test_lambda_walk_stops_on_a_plateau_of_the_validation_error():
    # each point lowers the error by 1e-4 of a standard error: a plateau after the first
    search = _ScriptedSearch([1.0 - 1e-5 * k for k in range(12)], se=0.1)
    search._walk([float(k + 1) for k in range(12)], None)
    assert len(search.path) == 1 + LAM_PATIENCE


def test_lambda_walk_goes_on_while_the_error_falls_by_more_than_the_noise():
    search = _ScriptedSearch([1.0 - 0.1 * k for k in range(6)] + [0.5] * 6, se=0.01)
    search._walk([float(k + 1) for k in range(12)], None)
    assert len(search.path) == 6 + LAM_PATIENCE


def test_data_rank_bound_counts_parameters_against_observed_entries():
    rng = np.random.default_rng(0)
    shape = (10, 12, 15)
    entries = np.stack([rng.integers(0, r, 400) for r in shape], 1)
    obs = Observations(entries, rng.random(400), shape)
    bound = data_rank_bound(obs)
    assert isinstance(bound, int) and bound == int(obs.n_entries // (1.5 * sum(shape)))
    tiny = Observations(entries[:3], rng.random(3), shape)
    assert data_rank_bound(tiny) == 1


def _noisy_low_rank():
    rng = np.random.default_rng(1)
    shape = (12, 11, 10)
    truth = np.einsum("ir,jr,kr->ijk", *(rng.random((r, 3)) for r in shape))
    noisy = np.clip(truth + 0.05 * rng.standard_normal(shape), 0, None)
    mask = rng.random(shape) < 0.3
    return np.where(mask, noisy, np.nan)


def test_a_capped_certificate_fit_is_reported_and_not_certified(monkeypatch):
    monkeypatch.setattr(fitting, "FINAL_FIT_NEED_FACTOR", 0.0)
    monkeypatch.setattr(fitting, "FINAL_FIT_MIN_S", 1e-3)
    _, res = complete(_noisy_low_rank(), return_result=True, time_limit=30, progress=False)
    assert res.model == "cp" and res.status == "refined" and not res.certified
    final = res.stats["final_fit"]
    assert final["cap_s"] is not None and "refined model is returned" in final["cap"]
    cert = res.certificate
    assert cert.status == final["status"] == "time_limit" and not cert.certified
    assert math.isfinite(cert.lower_bound) and cert.gap == cert.objective - cert.lower_bound
    assert "capped" in res.message
    assert res.stats["call"]["status"] == "finished"
    curve = res.stats["lam_search"]["validation_curve"]
    assert [c[0] for c in curve] == sorted(c[0] for c in curve)


def test_a_returned_convex_fit_is_not_capped(monkeypatch):
    monkeypatch.setattr(fitting, "FINAL_FIT_NEED_FACTOR", 0.0)
    monkeypatch.setattr(fitting, "FINAL_FIT_MIN_S", 1e-3)
    _, res = complete(_noisy_low_rank(), return_result=True, time_limit=4, refine=False,
                      progress=False)
    assert res.model == "atoms"
    assert res.stats["final_fit"]["cap_s"] is None and "capped" not in res.message
