"""The GPU backend (tensorcomp.gpu, tensorcomp._gpu_kernels) against the CPU path.

Kernels against their NumPy twins (below): supports, Gram rows and phi, g must be identical;
sums of direction values (fixed point on the device) agree to u 2^-61 sum |c| with the exact
sum, so with the CPU's float sums to the driver's rounding resolution. Solves against the CPU
path on the same instances: status, objective, proven bound and predictions.

Where no GPU is present (CI) the device tests skip with the reason; one test then runs the
kernel tests in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, a subprocess: the variable must
be set before Numba is imported), on tiny inputs. Run on a GPU machine:

    python -m pytest tests/test_gpu.py -q
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tensorcomp import Observations, solve
from tensorcomp import _kernels as K
from tensorcomp._validation import InputError
from tensorcomp.active_set import ActiveSet
from tensorcomp.oracles import _altmin_kernels as AK
from tensorcomp.oracles.base import SeparationQuery, atom_offsets, rounding_error
from tensorcomp.options import SolverOptions
from tensorcomp.synthetic import published_instance

from tensorcomp import gpu

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
HAVE_GPU, GPU_REASON = gpu.available()
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"no CUDA device: {GPU_REASON}")
#: entries of the kernel tests: tiny in the simulator (every thread is a Python thread), but
#: past one tile of a launch (2 blocks of 32 threads, 4 entries each) there
SIZES = (100, 700) if SIMULATED else (37, 5_000, 300_000)
GPU = SolverOptions(device="cuda")


# ---------------------------------------------------------------------------- NumPy twins
def words_numpy(support: np.ndarray) -> np.ndarray:
    """A support as the device's row: little-endian bit order, uint32 words."""
    u = support.shape[0]
    n_words = (u + 31) // 32
    padded = np.zeros(4 * n_words * 8, dtype=bool)
    padded[:u] = support
    return np.packbits(padded, bitorder="little").view("<u4").astype(np.uint32)


def gram_row_numpy(supports: np.ndarray, new: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return (supports & new).astype(np.int64) @ counts.astype(np.int64)


def coefficients_numpy(c, idx, offsets, theta, k) -> np.ndarray:
    """mode k's block coefficients, summed exactly (math.fsum) per bit."""
    r = int(offsets[k + 1] - offsets[k])
    z = np.zeros(idx.shape[1], dtype=np.int64)
    for m in range(idx.shape[0]):
        z += 1 - theta[offsets[m] + idx[m].astype(np.int64)]
    counted = (z + theta[offsets[k] + idx[k].astype(np.int64)]) == 1
    return np.array([math.fsum(c[counted & (idx[k] == j)]) for j in range(r)])


def fixed_point_tolerance(c: np.ndarray) -> float:
    """What the device's fixed-point sums may differ from the exact sum by."""
    total = float(np.abs(c).sum())
    return c.size * 2.0 ** (math.frexp(total)[1] - 61) if total else 0.0


# ---------------------------------------------------------------------------- instances
def instance(u_target: int, order: int = 3, seed: int = 0, repeats: bool = True,
             first: int | None = None):
    """Random entries of a random shape (modes of 3 to 8 indices; ``first``: mode 0's)."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(r) for r in rng.integers(3, 9, size=order))
    if first is not None:
        shape = (first,) + shape[1:]
    n = u_target * (2 if repeats else 1)
    idx = np.stack([rng.integers(0, r, size=n) for r in shape], axis=1)
    obs = Observations(idx, rng.normal(size=n), shape)
    return obs


def random_atoms(obs, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((m, int(sum(obs.shape)))) < 0.7


# ---------------------------------------------------------------------------- kernels
@needs_gpu
@pytest.mark.parametrize("u", SIZES)
@pytest.mark.parametrize("signed", [False, True])
def test_kernel_supports_gram_rows_and_h(u, signed):
    obs = instance(u, seed=u)
    aset = gpu.GpuActiveSet(obs, 1.0, signed=signed)
    twin = K.parity_support_numpy if signed else K.atom_support_numpy
    thetas = random_atoms(obs, 3 if SIMULATED else 6, seed=1)
    for t in thetas:
        aset.find_or_add(t)
    supports = np.stack([twin(aset._canonical(t), obs.entries, aset.offsets) for t in thetas])
    # the stored rows, read back, are the supports (np.packbits rows) of the atoms kept
    stored = K.unpack_supports(aset.packed, obs.n_entries)
    keys = {s.tobytes() for s in supports}
    assert {s.tobytes() for s in stored} == keys and aset.m == len(keys)
    rows = aset.data.new_rows(1)
    for s, t in zip(supports, thetas):
        count, h = aset.data.write_support(rows, 0, aset._canonical(t), signed)
        assert np.array_equal(rows.copy_to_host()[0], words_numpy(s))
        assert count == int(obs.counts[s].sum())
        assert h == pytest.approx(math.fsum(obs.sums[s]),
                                  abs=fixed_point_tolerance(obs.sums) + 1e-300)
    S = stored.astype(np.float64)
    assert np.array_equal(aset.G, (S * obs.counts) @ S.T)
    aset.set_weights(np.full(aset.m, 1.0 / aset.m))
    aset.check()


@needs_gpu
@pytest.mark.parametrize("u", SIZES)
def test_kernel_gram_row_counts_above_one(u):
    obs = instance(u, seed=u + 1, repeats=True)
    assert obs.counts.max() > 1
    data = gpu.DeviceObservations(obs)
    thetas = random_atoms(obs, 5, seed=2)
    rows = data.new_rows(len(thetas))
    supports = np.stack([K.atom_support_numpy(t, obs.entries, atom_offsets(obs.shape))
                         for t in thetas])
    for j, t in enumerate(thetas):
        data.write_support(rows, j, t, False)
    for j in range(len(thetas)):
        assert np.array_equal(data.gram_row(rows, j, len(thetas)),
                              gram_row_numpy(supports, supports[j], obs.counts))


@needs_gpu
@pytest.mark.parametrize("u", SIZES)
def test_kernel_data_pass_is_the_cpu_pass(u):
    """phi and g bit for bit; the scalars within the driver's rounding resolution."""
    obs = instance(u, seed=u + 2)
    cpu, dev = ActiveSet(obs, 1.7), gpu.GpuActiveSet(obs, 1.7)
    for t in random_atoms(obs, 7, seed=3):
        cpu.find_or_add(t)
        dev.find_or_add(t)
    w = np.random.default_rng(4).dirichlet(np.ones(cpu.m))
    cpu.set_weights(w)
    dev.set_weights(w)
    assert np.array_equal(cpu.point(), dev.point())
    f, g, gphi, gabs = cpu.data_pass()
    f_d, g_d, gphi_d, gabs_d = dev.data_pass()
    assert np.array_equal(np.asarray(g_d), g)
    resolution = rounding_error(obs.n_entries, gabs + f)
    assert abs(f_d - f) <= resolution and abs(gphi_d - gphi) <= resolution
    assert abs(gabs_d - gabs) <= resolution
    assert cpu.free_bound(g) == pytest.approx(dev.free_bound(g_d), abs=resolution)
    for t in random_atoms(obs, 3, seed=5):
        v = cpu.value_of(g, cpu.support_of(t))
        assert abs(dev.value_of(g_d, dev.support_of(t)) - v) <= resolution


@needs_gpu
@pytest.mark.parametrize("u, first", [(u, None) for u in SIZES[1 if SIMULATED else 0:]]
                         + [(SIZES[0], 12), (SIZES[0], 24), (SIZES[0], 40)])
def test_kernel_block_coefficients_and_values(u, first):
    """Word passes with modes of at most 8 indices (8 starts per 64-bit mask), 16 (4 per
    mask, two masks per mode for 8 starts) and 32 (2 per mask, run-length sums only), and
    byte passes (a mode of 40 indices: shared-memory bits)."""
    obs = instance(u, order=4, seed=u + 3, first=first)
    data = gpu.DeviceObservations(obs)
    data.word_passes = first != 40
    if first is None:  # the leading mode's index runs long, the last one's short: both kinds
        assert not data.short_runs[0] and data.short_runs[-1]
    offsets = atom_offsets(obs.shape)
    c = np.random.default_rng(6).normal(size=obs.n_entries)
    direction = gpu.DeviceDirection(data, data.cuda.to_device(c), data.pass_id,
                                    float(np.abs(c).sum()), float(np.minimum(c, 0).sum()))
    thetas = (np.random.default_rng(7).random((11, data.rho)) < 0.8).astype(np.uint8)
    thetas[3, offsets[1]:offsets[2]] = 0  # one empty block: still live
    thetas[4, offsets[0]:offsets[2]] = 0  # two: no entry can count
    modes = np.arange(11) % obs.order
    coef = data.block_coefficients(direction, thetas, modes)
    tol = fixed_point_tolerance(c)
    for s in range(11):
        want = coefficients_numpy(c, obs.by_mode, offsets, thetas[s], modes[s])
        assert np.all(np.abs(coef[s, :want.size] - want) <= tol), s
        assert not coef[s, want.size:].any()
        # the CPU heuristic's kernel (float sums in lanes and blocks)
        z = np.empty(obs.n_entries, dtype=np.uint8)
        AK.zero_counts_np(thetas[s], obs.by_mode, offsets, z)
        cpu = np.zeros(want.size)
        AK.mode_coefficients_np(c, obs.by_mode, offsets, thetas[s], z, modes[s], cpu)
        assert np.allclose(coef[s, :want.size], cpu, rtol=0,
                           atol=rounding_error(obs.n_entries, float(np.abs(c).sum())))
    assert not coef[4].any()
    values = data.atom_values(direction, thetas)
    for s in range(11):
        on = K.atom_support_numpy(thetas[s].astype(bool), obs.entries, offsets)
        assert abs(values[s] - math.fsum(c[on])) <= tol
    signed = data.atom_values(direction, thetas, parity=True)
    for s in range(11):
        zeros = sum(1 - thetas[s][offsets[k] + obs.entries[:, k]] for k in range(obs.order))
        assert abs(signed[s] - math.fsum(c[zeros % 2 == 0])) <= tol
    # other launch shapes: the same integers (fixed point: the order changes nothing)
    for per_thread, words in ((3, 2),):
        data.set_launch_shape(threads=64, per_thread=per_thread, words_per_thread=words)
        assert np.array_equal(data.block_coefficients(direction, thetas, modes), coef)
        assert np.array_equal(data.atom_values(direction, thetas), values)
        assert np.array_equal(data.atom_values(direction, thetas, parity=True), signed)
    if data.word_passes:  # the byte passes: the same integers
        data.word_passes = False
        assert np.array_equal(data.block_coefficients(direction, thetas, modes), coef)
        assert np.array_equal(data.atom_values(direction, thetas, parity=True), signed)
    with pytest.raises(InputError, match="threads must be a power of two"):
        data.set_launch_shape(threads=96, per_thread=1)


@needs_gpu
def test_stale_direction_is_refused():
    obs = instance(100)
    aset = gpu.GpuActiveSet(obs, 1.0)
    aset.find_or_add(np.ones(aset.rho, dtype=bool))
    aset.set_weights(np.ones(1))
    g = aset.data_pass()[1]
    aset.data_pass()
    with pytest.raises(InputError, match="stale"):
        np.asarray(g)


@needs_gpu
@pytest.mark.skipif(SIMULATED, reason="the simulator reports infinite free memory")
def test_memory_limit_message(monkeypatch):
    obs = instance(100)
    monkeypatch.setattr(gpu, "MEMORY_HEADROOM", 1e-15)
    with pytest.raises(InputError, match=r"device='cuda'.*GiB.*entries fit"):
        solve(obs, lam=1.0, options=GPU)


def test_entries_per_gib():
    # p = 9, uint8 indices and counts, 64 atom rows: 9 + 1 + 16 + 8 = 34 bytes per entry
    assert gpu.bytes_per_entry(9) == 34
    assert gpu.entries_per_gib(9) == (1 << 30) // 34
    assert gpu.entries_per_gib(3) > gpu.entries_per_gib(5) > gpu.entries_per_gib(9)


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device is present")
def test_no_gpu_says_what_is_missing():
    obs = Observations(np.array([[0, 1], [1, 0]]), np.array([1.0, 2.0]), (2, 2))
    with pytest.raises(gpu.GpuUnavailableError, match="device='cuda' needs"):
        solve(obs, lam=1.0, options=GPU)


# ---------------------------------------------------------------------------- solves
def _compare(obs, lam, options=GPU, atoms="binary", **kw):
    """Both runs end with the same status and certification. The trajectories may part where
    a decision is a near-tie that the two summation orders break differently; what a
    certificate proves is then compared: each objective is within its tol of f*, and the
    fits' sample-weighted RMS distance on the observed entries is at most sqrt(gap) each
    from the optimum (f is quadratic with that curvature)."""
    cpu = solve(obs, lam=lam, atoms=atoms, options=options.replace(device="cpu"), **kw)
    dev = solve(obs, lam=lam, atoms=atoms, options=options, **kw)
    assert dev.status == cpu.status
    assert dev.certified == cpu.certified
    if cpu.certified:
        slack = cpu.tol + dev.tol
        assert abs(dev.objective - cpu.objective) <= slack
        assert max(dev.lower_bound, cpu.lower_bound) <= min(dev.objective, cpu.objective) + slack
        a, b = dev.predict(obs.entries), cpu.predict(obs.entries)
        rms = math.sqrt(float(obs.counts @ (a - b) ** 2) / obs.n_samples)
        assert rms <= math.sqrt(dev.objective - dev.lower_bound) + math.sqrt(
            cpu.objective - cpu.lower_bound) + 1e-9 * math.sqrt(obs.value_scale)
    return cpu, dev


SOLVES = [(3, 2_000, 0), (4, 20_000, 1), (9, 200_000, 2)]


@needs_gpu
@pytest.mark.skipif(SIMULATED, reason="too slow in the simulator")
@pytest.mark.parametrize("order, n, seed", SOLVES)
def test_solve_matches_cpu_published(order, n, seed):
    _, obs = published_instance((6,) * order, n, seed)
    cpu, dev = _compare(obs, 1.0)
    assert dev.status == "optimal"


@needs_gpu
@pytest.mark.skipif(SIMULATED, reason="too slow in the simulator")
def test_solve_matches_cpu_noisy_with_exact_stage():
    """Noise: the heuristic fails at the end and branch and bound certifies on the host copy
    of g."""
    truth, obs = published_instance((5, 5, 5), 600, 3)
    noisy = Observations(obs.entries, obs.means + np.random.default_rng(1).normal(
        scale=0.05, size=obs.n_entries), obs.shape)
    _compare(noisy, 0.6, tol=1e-6)


@needs_gpu
@pytest.mark.skipif(SIMULATED, reason="too slow in the simulator")
def test_solve_matches_cpu_signed():
    rng = np.random.default_rng(2)
    shape = (5, 4, 6)
    idx = np.stack([rng.integers(0, r, size=300) for r in shape], axis=1)
    obs = Observations(idx, rng.normal(size=300), shape)
    _compare(obs, 2.0, atoms="signed")


@needs_gpu
@pytest.mark.skipif(SIMULATED, reason="too slow in the simulator")
def test_solve_with_checks_and_altmin_only():
    _, obs = published_instance((5, 6, 4), 800, 5)
    _compare(obs, 0.8, options=GPU.replace(oracle="altmin", check=True))


@needs_gpu
def test_gpu_heuristic_matches_cpu_heuristic():
    """Same starts, same decisions: the same atoms from the same query sequence."""
    from tensorcomp.oracles.altmin import AltMinOracle
    _, obs = published_instance((7, 6, 5, 4), 120 if SIMULATED else 4_000, 9)
    aset = gpu.GpuActiveSet(obs, 1.0)
    aset.find_or_add(np.ones(aset.rho, dtype=bool))
    aset.set_weights(np.ones(1))
    _, g_d, gphi, _ = aset.data_pass()
    g = np.asarray(g_d).copy()
    cpu = AltMinOracle(obs.entries, obs.shape, seed=3)
    dev = gpu.GpuAltMin(aset.data, aset.observed_bits, seed=3)
    for target in (gphi, -1e300):
        a = cpu.separate(SeparationQuery(direction=g, current_value=gphi, target=target,
                                         certify_level=math.inf))
        b = dev.separate(SeparationQuery(direction=g_d, current_value=gphi, target=target,
                                         certify_level=math.inf))
        assert np.array_equal(a.theta, b.theta)
        assert a.value == pytest.approx(b.value, abs=rounding_error(obs.n_entries,
                                                                    float(np.abs(g).sum())))


# ---------------------------------------------------------------------------- simulator
@pytest.mark.skipif(HAVE_GPU or SIMULATED, reason="the device itself runs these tests")
def test_kernels_in_the_cuda_simulator():
    """Kernel tests and the heuristic's equality with the CPU's, in Numba's CUDA simulator on
    tiny inputs (the device runs all of them)."""
    try:
        from numba.cuda import simulator  # noqa: F401
    except ImportError:
        pytest.skip("numba's CUDA simulator is not importable")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    tests = "kernel_block or kernel_data_pass or heuristic"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", tests,
         str(Path(__file__))], env=env, capture_output=True, text=True, timeout=600,
        cwd=str(Path(__file__).resolve().parents[1]))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.split("\n")[-2], \
        proc.stdout[-2000:]
