"""complete()/fit() on noisy data: one pipeline, the result describes the returned model, time
budget, Ctrl-C, lambda search, refinement; the CP kernels against NumPy twins and a brute-force
dense model; the active set after swap-remove drops."""
import itertools
import time

import numpy as np
import pytest

from tensorcomp import CompletionResult, InputError, Observations, complete, fit
from tensorcomp import _cp_kernels as CK
from tensorcomp import _kernels as K
from tensorcomp.active_set import ActiveSet
from tensorcomp import fitting
from tensorcomp.fitting import auto_time_limit
from tensorcomp.oracles.deadline import Deadline
from tensorcomp.selection import Split
from tensorcomp.refine import CPModel, refine_cp
from tensorcomp.synthetic import published_instance
from tensorcomp.options import SolverOptions


def smooth_low_rank(shape=(12, 11, 10), rank=3, noise=0.01, frac=0.3, seed=1):
    rng = np.random.default_rng(seed)
    factors = [rng.random((r, rank)) for r in shape]
    truth = np.einsum("ir,jr,kr->ijk", *factors)
    noisy = np.clip(truth + noise * rng.standard_normal(shape), 0, None)
    mask = rng.random(shape) < frac
    return truth, noisy, mask


def heldout_nmse(out, truth, mask):
    miss = ~mask
    return float(np.sum((out[miss] - truth[miss]) ** 2) / np.sum(truth[miss] ** 2))


# ------------------------------------------------------------------------------------ kernels
@pytest.fixture
def cp_problem():
    rng = np.random.default_rng(3)
    shape = (5, 4, 6)
    offsets = np.concatenate([[0], np.cumsum(shape)]).astype(np.int64)
    entries = np.stack([rng.integers(0, r, 80) for r in shape], 1)
    F = rng.random((offsets[-1], 3))
    return rng, shape, offsets, entries, F


def test_cp_kernels_match_numpy_and_brute_force(cp_problem):
    rng, shape, offsets, entries, F = cp_problem
    dense = np.einsum("ir,jr,kr->ijk", *[F[offsets[k]:offsets[k + 1]] for k in range(3)])
    brute = dense[tuple(entries.T)]
    assert np.allclose(CK.cp_values(F, offsets, entries), brute, rtol=1e-13)
    assert np.allclose(CK.cp_values_numpy(F, offsets, entries), brute, rtol=1e-13)
    w, y = rng.integers(1, 4, 80).astype(float), rng.random(80)
    for k in range(3):
        M, B = CK.mode_normal_equations(F, offsets, entries, w, y, k)
        M2, B2 = CK.mode_normal_equations_numpy(F, offsets, entries, w, y, k)
        assert np.allclose(M, M2, rtol=1e-12) and np.allclose(B, B2, rtol=1e-12)
        # brute force: the gradient of sum_x w_x (y_x - model_x)^2 w.r.t. mode k's factor
        # vanishes where A solves M a = B row by row
        A = F[offsets[k]:offsets[k + 1]]
        grad_rows = np.einsum("jab,jb->ja", M, A) - B
        eps, j, r = 1e-6, int(entries[0, k]), 1
        Fp = F.copy()
        Fp[offsets[k] + j, r] += eps
        f = lambda G: float(w @ (y - CK.cp_values_numpy(G, offsets, entries)) ** 2)  # noqa
        assert (f(Fp) - f(F)) / eps == pytest.approx(2 * grad_rows[j, r], rel=1e-4, abs=1e-6)


def test_hals_rows_matches_numpy_and_solves_row_nnls(cp_problem):
    rng = np.random.default_rng(7)
    Z = rng.random((6, 30, 3))
    M = np.einsum("jxa,jxb->jab", Z, Z)
    B = np.einsum("jxa,jx->ja", Z, rng.random((6, 30)) - 0.3)
    A1, A2 = np.ones((6, 3)), np.ones((6, 3))
    CK.hals_rows(M, B, A1, 1e-9, 200)
    CK.hals_rows_numpy(M, B, A2, 1e-9, 200)
    assert np.allclose(A1, A2, atol=1e-10)
    # KKT of each row's NNLS: gradient >= 0, = 0 where the coefficient is positive
    grad = np.einsum("jab,jb->ja", M, A1) - B
    assert np.all(A1 >= 0) and np.all(grad >= -1e-7)
    assert np.allclose(grad[A1 > 1e-9], 0.0, atol=1e-7)


def test_gram_times_and_point_kernels():
    rng = np.random.default_rng(0)
    buf = rng.random((16, 16))
    buf = buf + buf.T
    v = rng.random(11)
    v[[2, 5]] = 0.0
    assert np.allclose(K.gram_times(buf, 11, v), K.gram_times_numpy(buf, 11, v), rtol=1e-13)
    S = rng.random((7, 9000)) < 0.4  # more than one block of the point kernel
    w = rng.random(7)
    w[3] = 0.0
    for kernel in (K.point_on_entries.serial, K.point_on_entries.parallel):
        assert np.allclose(kernel(S, w), K.point_on_entries_numpy(S, w), rtol=1e-13)


def test_swap_remove_drops_keep_caches_valid():
    rng = np.random.default_rng(2)
    shape = (6, 5, 4)
    entries = np.stack([rng.integers(0, r, 90) for r in shape], 1)
    obs = Observations(entries, rng.random(90), shape)
    aset = ActiveSet(obs, 1.5)
    thetas = rng.random((14, sum(shape))) < 0.6
    for t in thetas:
        aset.find_or_add(t)
    for _ in range(4):
        w = rng.random(aset.m)
        w[rng.random(aset.m) < 0.3] = 0.0
        w[0] = max(w[0], 0.1)
        expected = {aset.thetas[j].tobytes(): w[j] for j in range(aset.m) if w[j] > 0}
        aset.set_weights(w)
        aset.check()
        got = {aset.thetas[j].tobytes(): aset.weights[j] for j in range(aset.m)}
        total = sum(expected.values())
        assert got.keys() == expected.keys()
        assert all(abs(got[k] - expected[k] / total) < 1e-15 for k in got)
        for t in thetas[:3]:  # re-adding finds the survivors and appends the dropped
            j = aset.find_or_add(t)
            assert np.array_equal(aset.thetas[j], t) or \
                np.array_equal(aset.supports[j], K.atom_support_numpy(t, obs.entries,
                                                                       aset.offsets))
        aset.check()


# ------------------------------------------------------------------------------------ refinement
def test_refinement_recovers_noiseless_low_rank_and_leaves_input_alone():
    rng = np.random.default_rng(4)
    shape, rank = (9, 8, 7), 2
    factors = [rng.random((r, rank)) + 0.1 for r in shape]
    truth = np.einsum("ir,jr,kr->ijk", *factors)
    mask = rng.random(shape) < 0.4
    mask[:, :, 6] = False  # a slice without observations
    obs = Observations.from_dense(truth, mask)
    init = [f + 0.3 * rng.random(f.shape) for f in factors]
    before = [f.copy() for f in init]
    model = refine_cp(obs, init, max_sweeps=2000, rel_tol=1e-12)
    assert all(np.array_equal(a, b) for a, b in zip(init, before))
    assert model.info["objective"] < 1e-3 * model.info["start_objective"]
    est = model.to_dense()
    on = mask.copy()
    assert np.sum((est[on] - truth[on]) ** 2) / np.sum(truth[on] ** 2) < 1e-6
    assert all(np.all(f >= 0) for f in model.factors)
    assert np.allclose(model.factors[2][6], 0.0)  # the ridge keeps unobserved rows at 0
    assert np.allclose(model.predict(np.array([[1, 2, 3]])), est[1, 2, 3])


def test_refinement_ridge_is_chosen_by_validation_and_kept_in_the_refit():
    """Each ridge of REFINE_RIDGES gets its own rank search; the returned model is the one
    with the lowest validation error, and its refit on all entries uses the same ridge."""
    from tensorcomp.fitting import REFINE_RIDGES
    truth, noisy, mask = smooth_low_rank()
    _, res = complete(np.where(mask, noisy, np.nan), return_result=True, time_limit=None)
    ref = res.stats["refinement"]
    assert ref["kept"] and set(ref["rank_paths"]) == {repr(r) for r in REFINE_RIDGES}
    best = {r: min(row[1] for row in path) for r, path in ref["rank_paths"].items() if path}
    assert ref["ridge_rel"] in REFINE_RIDGES
    assert best[repr(ref["ridge_rel"])] == min(best.values())
    assert ref["final"]["ridge_rel"] == ref["ridge_rel"]


def test_an_average_of_cp_models_is_one_cp_model():
    """The average the refinement returns is one CPModel: its columns side by side, the first
    mode's scaled by 1/k; it predicts the mean of its members' predictions."""
    from tensorcomp.fitting import _average_of
    rng = np.random.default_rng(0)
    shape = (5, 4, 6)
    members = [CPModel(shape, [rng.random((r, R)) for r in shape], {"ridge_rel": 1e-6})
               for R in (2, 3, 1)]
    avg = _average_of(members)
    assert avg.rank == 6 and _average_of(members[:1]) is members[0]
    idx = np.argwhere(np.ones(shape, bool))
    want = np.mean([m.predict(idx) for m in members], axis=0)
    assert np.allclose(avg.predict(idx), want, rtol=1e-13, atol=0)
    assert all(np.all(f >= 0) for f in avg.factors)


def noisy_bumps(seed=0, shape=(25, 20, 10), rank=4, frac=0.1, noise=0.1):
    """Sums of Gaussian bumps per mode (smooth, nonnegative), noise, a random mask."""
    rng = np.random.default_rng(seed)
    fs = []
    for r in shape:
        t = np.linspace(0, 1, r)[:, None]
        centre, width = rng.uniform(0, 1, (1, rank)), rng.uniform(0.1, 0.4, (1, rank))
        fs.append(np.exp(-((t - centre) / width) ** 2))
    truth = np.einsum("ir,jr,kr->ijk", *fs)
    rng = np.random.default_rng(seed + 100)
    noisy = truth + noise * truth.std() * rng.standard_normal(shape)
    mask = rng.random(shape) < frac
    return truth, np.where(mask, np.maximum(noisy, 0), np.nan), mask


def test_an_averaged_refinement_is_what_complete_returns():
    """Where an average of validated CP models validates better than the best one by more
    than the paired standard error, it is the model: its members are the best-validating fits,
    the result predicts exactly the returned tensor, and the summary says what it is."""
    from tensorcomp.fitting import AVERAGE_MAX_MEMBERS, AVERAGE_MAX_SPREAD
    truth, X, mask = noisy_bumps()
    out, res = complete(X, return_result=True, time_limit=None, progress=False)
    ref = res.stats["refinement"]
    avg = ref["average"]
    assert avg["kept"], avg  # this instance is one where the average validates better
    k = avg["members"]
    assert 2 <= k <= AVERAGE_MAX_MEMBERS and len(ref["members"]) <= k
    assert res.model == "cp" and res.n_atoms == ref["rank"] == sum(
        m["rank"] for m in ref["members"])
    best = avg["single_validation_mse"]
    assert ref["members"][0]["validation_mse"] == best
    assert avg["validation_mse"] < best
    row = next(r for r in avg["candidates"] if r[0] == k)
    assert best - row[1] > 0 and row[2] >= 0
    assert all(r[1] >= avg["validation_mse"] for r in avg["candidates"])
    spread = ref["members_spread"]  # the refits' spreads: the guard kept those within it
    assert len(ref["members"]) == 1 + sum(x <= AVERAGE_MAX_SPREAD for x in spread[1:])
    miss = np.argwhere(~mask)
    assert np.allclose(res.predict(miss), out[~mask], rtol=0, atol=1e-12)
    ranks = ", ".join(str(m["rank"]) for m in ref["members"])
    assert f"the average of {len(ref['members'])} validated CP models of ranks {ranks}" \
        in res.message
    assert f"the average of {len(ref['members'])} CP models of ranks {ranks}" in res.summary()
    assert np.array_equal(out[mask], X[mask])
    err = np.sum((out - truth)[~mask] ** 2) / np.sum(truth[~mask] ** 2)
    assert err < 0.05


def test_a_strong_ridge_keeps_sparse_rows_from_growing():
    """Rows seen only a few times: with the strong ridge of REFINE_RIDGES their factors stay
    near the others' scale; the numerical ridge lets them grow where nothing is observed."""
    from tensorcomp.fitting import REFINE_RIDGES
    rng = np.random.default_rng(3)
    shape, rank = (30, 30, 30), 8
    truth = np.einsum("ir,jr,kr->ijk", *(rng.random((r, rank)) for r in shape))
    noisy = truth + 0.1 * truth.std() * rng.standard_normal(shape)
    mask = rng.random(shape) < 0.03
    obs = Observations.from_dense(np.where(mask, noisy, np.nan))
    init = [rng.random((r, rank)) for r in shape]
    weak = refine_cp(obs, init, ridge_rel=REFINE_RIDGES[0], max_sweeps=300)
    strong = refine_cp(obs, init, ridge_rel=REFINE_RIDGES[-1], max_sweeps=300)
    far = ~mask
    err = {name: np.sum((m.to_dense()[far] - truth[far]) ** 2) / np.sum(truth[far] ** 2)
           for name, m in (("weak", weak), ("strong", strong))}
    assert err["strong"] < err["weak"], err


def test_cp_model_to_dense_refuses_huge():
    model = CPModel((10**4, 10**4, 10**4), [np.ones((10**4, 1))] * 3)
    with pytest.raises(InputError, match="max_bytes"):
        model.to_dense()


# ------------------------------------------------------------------------------------ complete()
def test_complete_noisy_low_rank_beats_convex_and_labels_the_refinement():
    truth, noisy, mask = smooth_low_rank()
    X = np.where(mask, noisy, np.nan)
    X_before = X.copy()
    out, res = complete(X, return_result=True, time_limit=8)
    assert np.array_equal(X, X_before, equal_nan=True)
    s = res.stats
    assert res.model == "cp" and res.status == "refined" and not res.certified
    assert s["refinement"]["kept"] and res.n_atoms == s["refinement"]["rank"]
    assert s["refinement"]["validation_mse"] < s["refinement"]["convex_validation_mse"]
    assert "NOT covered by a certificate" in res.summary()
    assert "lambda search" in res.summary()
    refined = heldout_nmse(out, truth, mask)
    convex_out, convex_res = complete(X, return_result=True, time_limit=5, refine=False)
    assert convex_res.model == "atoms"
    assert refined < 0.5 * heldout_nmse(convex_out, truth, mask)
    assert refined < 2e-3


def test_result_describes_the_returned_model(tmp_path):
    """Regression: the result of complete() used to predict, save and certify the convex fit
    while the tensor returned was the refined CP model (held-out 4.8e-2 against 3.05e-3)."""
    truth, noisy, mask = smooth_low_rank()
    X = np.where(mask, noisy, np.nan)
    out, res = complete(X, return_result=True, time_limit=None)
    assert res.model == "cp"
    miss = np.argwhere(~mask)
    pred = res.predict(miss)
    scale = float(np.max(np.abs(out)))
    assert np.max(np.abs(pred - out[~mask])) <= 1e-12 * scale
    assert np.allclose(res.to_dense()[~mask], out[~mask], rtol=0, atol=1e-12 * scale)
    # the objective is the returned model's, on all observed samples
    obs = Observations.from_dense(X)
    r = obs.means - res.predict(obs.entries)
    assert res.objective == pytest.approx(float(np.sum(obs.counts * r * r) / obs.n_samples),
                                          rel=1e-12)
    # never certified; its bound covers every tensor; the certificate is the convex fit's
    assert not res.certified and res.lower_bound <= res.objective
    cert = res.certificate
    assert cert.samples == "all observed" and cert.lam == res.lam
    assert res.convex_fit is not None and res.convex_fit.model == "atoms"
    assert cert.objective == res.convex_fit.objective
    assert cert.lower_bound == res.convex_fit.lower_bound
    # the convex fit is a different model: what the old result described
    assert np.max(np.abs(res.convex_fit.predict(miss) - pred)) > 1e-6
    # save/load keeps the returned model, bit for bit
    back = CompletionResult.load(res.save(tmp_path / "m.npz"))
    assert back.model == "cp" and back.status == res.status and not back.certified
    assert np.array_equal(back.predict(miss), pred)
    assert back.certificate == cert
    tl = pytest.importorskip("tensorly")
    assert np.allclose(tl.cp_to_tensor(res.to_tensorly()), res.to_dense(), rtol=1e-12)


def test_fit_complete_and_cli_return_the_same_tensor(tmp_path):
    """One pipeline, one answer: fit() on Observations and the command line give complete()'s
    tensor (no time limit: nothing depends on the machine's speed)."""
    from tensorcomp.cli import main
    truth, noisy, mask = smooth_low_rank(shape=(10, 9, 8), frac=0.35, seed=4)
    X = np.where(mask, noisy, np.nan)
    out, res = complete(X, return_result=True, time_limit=None, progress=False)
    via_fit = fit(Observations.from_dense(X), time_limit=None, progress=False)
    dense = via_fit.to_dense()
    dense[mask] = noisy[mask]
    assert np.array_equal(dense, out)
    assert via_fit.model == res.model and via_fit.lam == res.lam
    assert via_fit.stats["call"]["entry"] == "fit"
    np.save(tmp_path / "x.npy", X)
    assert main([ "complete", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"),
                  "--time-limit", "none"]) == 0
    assert np.array_equal(np.load(tmp_path / "y.npy"), out)


def test_without_a_time_limit_the_final_fit_is_capped_by_iterations(monkeypatch):
    """time_limit=None: nothing depends on the clock, and the call still returns on noisy data
    (where the final fit's proof does not come in any time one waits for): the final fit is
    capped by iterations, and a cap that stopped it is said, never hidden as a proof."""
    truth, noisy, mask = smooth_low_rank(noise=0.05)
    X = np.where(mask, noisy, np.nan)
    out, res = complete(X, return_result=True, time_limit=None, progress=False)
    final = res.stats["final_fit"]
    assert res.model == "cp" and "validation fit's" in final["cap"]
    assert final["max_iter"] >= fitting.PATH_MAX_ITER
    assert res.convex_fit.stats["iterations"] <= final["max_iter"]
    # the convex fit as the model: FINAL_FIT_MAX_ITER, here made small to hit it
    monkeypatch.setattr(fitting, "FINAL_FIT_MAX_ITER", 30)
    _, convex = complete(X, return_result=True, time_limit=None, refine=False,
                         progress=False)
    assert convex.stats["final_fit"]["max_iter"] == 30
    assert convex.status == "iteration_limit" and not convex.certified
    assert convex.stats["iterations"] == 30
    assert "capped at 30 iterations" in convex.message
    assert convex.lower_bound <= convex.objective


def test_entries_without_information_are_filled_with_a_warning():
    rng = np.random.default_rng(0)
    X = rng.random((6, 5, 4))
    X[:, 2, :] = np.nan  # a whole slice unobserved
    X[rng.random(X.shape) < 0.3] = np.nan
    with pytest.warns(UserWarning, match=r"24 of 120 entries lie on slices with no "
                                         r"observation \(mode 1 index 2\).*filled with 0.0"):
        out = complete(X, time_limit=3, progress=False)
    assert np.all(out[:, 2, :] == 0.0)
    v = np.array([1.0, np.nan, 2.0, np.nan, 3.0])
    with pytest.warns(UserWarning, match="2 of 5 entries"):
        complete(v, time_limit=3, progress=False)


def test_ctrl_c_while_the_kernels_are_prepared_ends_the_call(monkeypatch):
    """Regression: Ctrl-C during the first call's kernel warm-up was swallowed and the call
    then ran in full. The preparation no longer catches it, and nothing runs after it."""
    from tensorcomp import _compile

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    ran = []
    monkeypatch.setattr(_compile, "prepare", interrupted)
    monkeypatch.setattr(_compile, "prepare_dense", interrupted)
    monkeypatch.setattr(fitting._Call, "run", lambda self, lam: ran.append(lam))
    truth, noisy, mask = smooth_low_rank(shape=(6, 5, 4))
    with pytest.raises(KeyboardInterrupt):
        complete(np.where(mask, noisy, np.nan), time_limit=5, progress=False)
    with pytest.raises(KeyboardInterrupt):
        fit(Observations.from_dense(np.where(mask, noisy, np.nan)), time_limit=5)
    assert ran == []


def test_interrupt_during_refinement_is_never_certified(monkeypatch):
    """Regression: complete() interrupted during the refinement returned status 'interrupted'
    with certified=True, the certificate of the search fit on the training part."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(fitting, "refine_cp", interrupted)
    monkeypatch.setattr("tensorcomp.selection.refine_cp", interrupted)
    truth, noisy, mask = smooth_low_rank()
    out, res = complete(np.where(mask, noisy, np.nan), return_result=True, time_limit=10,
                        progress=False)
    assert res.status == "interrupted" and not res.certified
    assert res.stats["call"]["status"] == "interrupted"
    assert res.certificate.samples == "training part"
    assert res.model == "atoms" and np.isfinite(out).all()
    obs = Observations.from_dense(np.where(mask, noisy, np.nan))
    r = obs.means - res.predict(obs.entries)
    assert res.objective == pytest.approx(float(np.sum(obs.counts * r * r) / obs.n_samples))


def test_lambda_search_uses_training_entries_and_goes_below_max():
    """The reviewer's case: (8,8,8), 600 samples, noise 0.3: the best lambda is below max|y|."""
    truth, clean = published_instance((8, 8, 8), 600, 0)
    rng = np.random.default_rng(0)
    y = clean.means + 0.3 * rng.standard_normal(clean.n_entries)
    obs = Observations(clean.entries, np.clip(y, 0, None), clean.shape)
    shape = obs.shape
    dense = np.full(shape, np.nan)
    dense[tuple(obs.entries.T)] = obs.means
    _, res = complete(dense, return_result=True, time_limit=8, refine=False)
    train = Split(Observations.from_dense(dense), 0.2, 0).train
    search = res.stats["lam_search"]
    assert search["base"] == pytest.approx(float(np.max(train.means)))
    lams = [row[0] for row in res.stats["lam_path"]]
    assert min(lams) < search["base"]
    path, se = res.stats["lam_path"], search["validation_se"]
    i = min(range(len(path)), key=lambda k: path[k][1])
    within = [r[0] for r in path if r[1] <= path[i][1] + se[i]]
    assert res.lam == min(within) < search["base"]  # one-standard-error rule
    # the chosen lambda completes better than lambda = max|y| (the old grid's smallest point)
    T = truth.to_dense()
    at_base = complete(dense, lam=search["base"], time_limit=4, refine=False,
                       keep_observed=False)
    chosen = complete(dense, lam=res.lam, time_limit=4, refine=False, keep_observed=False)
    assert np.sum((chosen - T) ** 2) < np.sum((at_base - T) ** 2)


def test_time_limit_covers_the_whole_call():
    truth, noisy, mask = smooth_low_rank(shape=(25, 25, 25), frac=0.2)
    X = np.where(mask, noisy, np.nan)
    complete(X, time_limit=1.0)  # compile kernels outside the timed call
    t = time.perf_counter()
    out, res = complete(X, return_result=True, time_limit=2.0)
    took = time.perf_counter() - t
    assert took < 2.0 + 1.5  # overshoot: one heuristic call / HALS sweep / dense output
    assert res.stats["call"]["time_s"] <= took
    assert np.isfinite(out).all()
    assert res.stats["call"]["status"] in ("finished", "time_limit")
    assert auto_time_limit(30**3) < 10 and auto_time_limit(10**6) == pytest.approx(60.0)


def test_ctrl_c_ends_the_whole_call_with_its_best_state():
    truth, noisy, mask = smooth_low_rank()
    X = np.where(mask, noisy, np.nan)
    calls = {"n": 0}

    def interrupt_in_second_fit(state):
        calls["n"] += 1 if state.iteration == 1 else 0
        if calls["n"] >= 2 and state.iteration >= 5:
            raise KeyboardInterrupt

    t = time.perf_counter()
    out, res = complete(X, return_result=True, time_limit=60, callback=interrupt_in_second_fit)
    assert time.perf_counter() - t < 30
    assert res.stats["call"]["status"] == "interrupted"
    assert res.status == "interrupted" and not res.certified
    assert res.message.count("interrupted by the user") == 1
    assert len(res.stats["lam_path"]) == 2  # the search stopped: no third fit, no final fit
    assert "final_fit_time_s" not in res.stats
    assert np.isfinite(out).all() and np.array_equal(out[mask], noisy[mask])


@pytest.mark.parametrize("kwargs, needle", [
    (dict(time_limit=-1), "time_limit must be"),
    (dict(time_limit="soon"), "time_limit must be"),
    (dict(refine="yes"), "refine must be True or False"),
    (dict(max_rank=0), "max_rank must be a positive integer"),
    (dict(validation_fraction=1.5), "validation_fraction must be a number in (0, 1)"),
    (dict(progress="yes"), "progress must be True, False or None"),
    (dict(warm_start=None), "warm_start is set by complete"),
    (dict(refine_cp=True), "unexpected keyword argument(s) .'refine_cp'."),
    (dict(lam_grid=[1.0, -2.0]), "lam_grid entry"),
])
def test_complete_rejects_bad_options_before_work(kwargs, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        complete(np.ones((3, 3, 3)), **kwargs)


def test_entries_enumeration_helper_is_consistent():
    # the dense output of a CP model equals predict() everywhere (used by complete())
    rng = np.random.default_rng(5)
    shape = (3, 4, 2)
    model = CPModel(shape, [rng.random((r, 2)) for r in shape])
    idx = np.array(list(itertools.product(*[range(r) for r in shape])))
    assert np.allclose(model.predict(idx), model.to_dense().ravel())


def test_demo_tensor_with_defaults_finishes_certified():
    """Regression: the default budget (then 1 s + 59 s per 1e6 entries, Numba loading counted
    against it) cut every search fit on the bundled 1e4-entry demo tensor; held-out NMSE varied
    run to run from 6e-12 to 0.13 with status time_limit. Unlimited, the call finishes certified
    at ~6e-12 in about a second."""
    from pathlib import Path

    import tensorcomp
    data = np.load(Path(tensorcomp.__file__).parent / "data" / "default.npz")
    truth, mask = data["truth"], data["mask"]
    out, res = complete(np.where(mask, truth, np.nan), return_result=True, progress=False)
    assert res.stats["call"]["status"] == "finished", res.stats["call"]["cut_by_time_limit"]
    assert res.status == "optimal" and res.certified and res.model == "atoms"
    # the final fit stops at the default tolerance (1e-4 mean(y^2) on the objective): held-out
    # NMSE 1e-12 .. 1e-8 depending on the lambda chosen within one standard error
    assert heldout_nmse(out, truth, mask) < 1e-6
    assert res.stats["call"]["time_s"] < auto_time_limit(truth.size)


def test_kernels_are_prepared_once_outside_the_budget():
    truth, noisy, mask = smooth_low_rank(shape=(6, 5, 4))
    X = np.where(mask, noisy, np.nan)
    complete(X, time_limit=2, progress=False)
    _, res = complete(X, return_result=True, time_limit=2, progress=False)
    call = res.stats["call"]
    assert call["prepare_time_s"] == 0.0  # the same problem class was prepared already
    assert call["kernels"] in ("warm", "compiled", "fallback", "direct")


def test_rank_schedule_and_subsample():
    from tensorcomp.selection import _subsample, rank_schedule
    assert rank_schedule(10) == [1, 2, 3, 4, 5, 6, 8, 10]
    assert rank_schedule(7) == [1, 2, 3, 4, 5, 6, 7]
    assert rank_schedule(1) == [1]
    assert rank_schedule(20)[-3:] == [12, 16, 20]
    rng = np.random.default_rng(0)
    entries = np.stack([rng.integers(0, 9, 400) for _ in range(3)], 1)
    obs = Observations(entries, rng.random(400), (9, 9, 9))
    assert _subsample(obs, 10**6, 0) is obs
    sub = _subsample(obs, 50, 0)
    assert sub.n_entries == 50
    # every kept entry keeps all its samples: same mean and count as in the full set
    full = {tuple(e): (m, c) for e, m, c in zip(obs.entries, obs.means, obs.counts)}
    for e, m, c in zip(sub.entries, sub.means, sub.counts):
        assert full[tuple(e)][1] == c and full[tuple(e)][0] == pytest.approx(m, rel=1e-14)


def test_extrapolated_hals_reaches_the_same_fit_in_fewer_sweeps():
    rng = np.random.default_rng(8)
    shape, rank = (15, 14, 13), 4
    factors = [rng.random((r, rank)) for r in shape]
    truth = np.einsum("ir,jr,kr->ijk", *factors)
    mask = rng.random(shape) < 0.3
    obs = Observations.from_dense(truth, mask)
    init = [rng.random((r, rank)) for r in shape]
    plain = refine_cp(obs, init, max_sweeps=3000, rel_tol=1e-10, extrapolate=False)
    fast = refine_cp(obs, init, max_sweeps=3000, rel_tol=1e-10)
    assert fast.info["extrapolations"] > 0 and plain.info["extrapolations"] == 0
    assert fast.info["sweeps"] < plain.info["sweeps"]
    scale = float(np.mean(truth[mask] ** 2))
    assert fast.info["objective"] <= max(plain.info["objective"], 1e-8 * scale)
    assert all(np.all(f >= 0) for f in fast.factors)


def test_rank_search_tries_the_best_ranks_neighbours():
    from tensorcomp import solve
    from tensorcomp.progress import Progress
    from tensorcomp.selection import rank_search
    truth, noisy, mask = smooth_low_rank(shape=(16, 15, 14), rank=7, noise=0.002, frac=0.5)
    obs = Observations.from_dense(noisy, mask)
    data = Split(obs, 0.2, 0)
    train = data.train
    convex = solve(train, lam=2 * float(np.max(train.means)), time_limit=2,
                   options=SolverOptions(oracle="altmin"))
    model, path = rank_search(data, convex, np.inf, 20, Deadline(None),
                              Progress(False, False, None))
    tried = [row[0] for row in path]
    best = min(path, key=lambda row: row[1])[0]
    assert model is not None and model.rank == best
    assert 7 in tried  # off the schedule (6, 8, 10, ...): reached as a neighbour
    for r in (best - 1, best + 1):
        assert r in tried or r > convex.n_atoms


def test_ctrl_c_in_the_final_fit_is_reported_once(monkeypatch):
    """Regression: the solve's own 'interrupted' message and the call's repeated each other."""
    from tensorcomp import solver
    truth, noisy, mask = smooth_low_rank()
    X = np.where(mask, noisy, np.nan)
    real = solver._Driver._oracle_step

    def interrupted(self, f_before):
        if self.obs.n_entries == int(mask.sum()):  # the final fit: all observed entries
            raise KeyboardInterrupt
        return real(self, f_before)
    monkeypatch.setattr(solver._Driver, "_oracle_step", interrupted)
    out, res = complete(X, return_result=True, time_limit=20, refine=False, progress=False)
    assert res.status == "interrupted" and not res.certified
    assert res.certificate.samples == "all observed"
    assert res.message.count("interrupted by the user") == 1, res.message
    assert np.isfinite(out).all()
