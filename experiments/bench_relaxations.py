"""Tighter LP relaxations of the p=3 oracle problem: do they close the root gap?

The exact oracle minimises ``sum_x c_x a_i b_j c_k`` over 0/1 bits (x = (i, j, k) observed).
On the hard noisy queries (20^3, n=4000) every bound the search and SCIP use is far above the
minimum high in the tree (docs/performance.md). This script measures, on real exact-oracle
queries recorded from default solves, the root LP bound / minimum for

  std      the standard linearisation SCIP solves now (``oracles/scip.py``: phi_x <= each bit,
           phi_x >= sum of bits - 2);
  +2link   + every flower inequality of this hypergraph. For degree-3 monomials two edges can
           share at most two of the centre's three nodes and two distinct 2-subsets of a 3-set
           always meet, so a flower has one petal: the 2-link inequality
           phi_e1 + theta_v - phi_e0 <= 1 for each ordered pair e0, e1 sharing two indices
           (v: the centre's third bit; Crama & Rodriguez-Heck);
  +RI/tri  + running-intersection inequalities, separated in rounds: centre e0 = (i, j, k), a
           neighbour sharing (i, j) and one sharing (i, k) (their intersections with e0 meet in
           {a_i}): phi_e1 + phi_e2 - phi_e0 - theta_a_i <= 0 (and the two other shared bits),
           plus the three-neighbour "triangle" phi_e1 + phi_e2 + phi_e3 - 2 phi_e0 <= 1
           (neighbours sharing (i, j), (i, k), (j, k): any two of them on force e0 on);
  CER      the complete edge relaxation for degree 3 (Del Pia & Khajavirad, arXiv:2507.12831),
           in its strongest form here: a variable for every pair product a_i b_j, a_i c_k, b_j c_k
           occurring in some monomial and, per monomial, the convex hull of its local 0/1 cube
           (all 8 inclusion-exclusion rows; it implies the standard, flower, RI and triangle
           rows above);
  CER+cl   + a zero-cost product variable with its 8 rows for every unobserved (i, j, k) whose
           three pairs all occur (closes the alpha-cycles of length three).

LPs are solved by HiGHS (scipy.optimize.linprog). The minimum is computed by enumeration that
does not use the library (all bits of two modes, the third in closed form) where that is
possible (10^3); at 20^3 (2^40 atoms) the best atom known is used instead. Since
bound <= minimum <= best < 0, a ratio to the best known can only overstate bound / minimum, and
"bound / best <= certify level / best" is exactly the test that settles the query, whatever the
minimum. Then SCIP's time to settle the query (reach the certify level,
60 s limit): the library's ``ScipOracle`` (standard model), against the same question on the
2-link and CER models (theta binary, the rest continuous, same SCIP settings, hint as warm
start).

    python experiments/bench_relaxations.py                 # 10^3 queries + the 20^3 query
    python experiments/bench_relaxations.py --skip-large    # 10^3 only (about 3 minutes)
    python experiments/bench_relaxations.py --small-seeds 0 # the 20^3 query only (about 7 min)
    python experiments/bench_relaxations.py --ri-large      # also RI rounds at 20^3 (+4 min)

Queries are recorded once (a 60 s default solve at 20^3) and cached under ``--cache``. Which
exact calls a solve makes depends on timing (machine load), so a re-recorded 20^3 query may
differ from the one in the README table.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_bb_threads import Recorder  # noqa: E402
from bench_certify import noisy_instance  # noqa: E402

from tensorcomp import solve  # noqa: E402
from tensorcomp.oracle_factory import make_oracle  # noqa: E402
from tensorcomp.oracles.base import SeparationQuery  # noqa: E402
from tensorcomp.oracles.scip import ScipOracle  # noqa: E402
from tensorcomp.options import SolverOptions
from tensorcomp.oracles.deadline import Deadline

PAIRS = ((0, 1), (0, 2), (1, 2))
#: key of an index pair (i, j): i * _KEY + j (mode sizes are far below this)
_KEY = 1 << 20


# ---------------------------------------------------------------------------------------------
# recording the exact-oracle queries of a default solve

class _Recorder(Recorder):
    """bench_bb_threads' recorder, keeping each answer too (its atom is the warm start)."""

    def __init__(self, stage) -> None:
        super().__init__(stage)
        self.answers = []

    def separate(self, query):
        answer = super().separate(query)
        self.answers.append(answer)
        return answer


def record(p, r, n, seed, cache, time_limit=60.0):
    """Exact-stage queries of the default solve on the noisy benchmark instance (cached npz)."""
    path = os.path.join(cache, f"queries_{p}_{r}_{n}_{seed}.npz")
    if not os.path.exists(path):
        obs = noisy_instance(p, r, n, seed, 0.05)
        auto = make_oracle("auto", obs, seed=seed, exact_time_limit_s=30.0)
        recorder = _Recorder(auto.stages[0])
        auto.stages = (recorder, *auto.stages[1:])
        solve(obs, lam=0.5, time_limit=time_limit, seed=seed, options=SolverOptions(oracle=auto))
        rho = int(sum(obs.shape))
        data = dict(entries=obs.entries, shape=np.asarray(obs.shape), count=len(recorder.queries))
        for i, (q, a) in enumerate(zip(recorder.queries, recorder.answers)):
            data.update({f"c{i}": q.direction, f"target{i}": q.target, f"level{i}": q.certify_level,
                         f"theta{i}": a.theta if a.theta is not None else np.zeros(rho, bool),
                         f"value{i}": a.value, f"status{i}": a.status})
        os.makedirs(cache, exist_ok=True)
        np.savez(path, **data)
    return np.load(path)


# ---------------------------------------------------------------------------------------------
# independent ground truth

def brute_force_minimum(entries, shape, c):
    """min over all bits of modes 0 and 1, mode 2 in closed form (slice bit = 1 iff its sum < 0).

    Written without the library: a dense coefficient tensor and one small matrix product per
    mode-0 pattern. 2^(r0 + r1) atoms: 10^3 only.
    """
    dense = np.zeros(shape)
    np.add.at(dense, tuple(entries.T), c)
    r0, r1, _ = shape
    patterns = ((np.arange(2**r1)[:, None] >> np.arange(r1)) & 1).astype(float)
    best = 0.0
    for mask in range(2**r0):
        a = ((mask >> np.arange(r0)) & 1).astype(float)
        slice_sums = patterns @ np.tensordot(a, dense, axes=(0, 0))
        best = min(best, float(np.minimum(slice_sums, 0.0).sum(axis=1).min()))
    return best


# ---------------------------------------------------------------------------------------------
# the relaxations, as blocks of rows "sum coef * x[col] <= rhs" over variables in [0, 1]

class Relaxation:
    """Variables: theta (all rho bits), phi (one per observed entry), then (extended) one per
    pair product and one per closing triple. ``blocks``: (cols (m, w), coefs (w,), rhs (m,))."""

    def __init__(self, entries, shape, extended=False, closing=False):
        self.entries = np.asarray(entries, dtype=np.int64)
        self.shape = tuple(int(r) for r in shape)
        self.u = len(self.entries)
        self.offsets = np.concatenate([[0], np.cumsum(self.shape)]).astype(np.int64)
        self.bits = self.entries + self.offsets[:-1]
        self.phi0 = int(self.offsets[-1])
        self.nvar = self.phi0 + self.u
        self.extended = extended
        self.blocks = []
        ids = self.phi0 + np.arange(self.u)
        for k in range(3):
            self.blocks.append((np.stack([ids, self.bits[:, k]], 1), np.array([1.0, -1.0]),
                                np.zeros(self.u)))
        self.blocks.append((np.column_stack([ids, self.bits]), np.array([-1.0, 1, 1, 1]),
                            np.full(self.u, 2.0)))
        self.closing = np.zeros((0, 3), dtype=np.int64)
        if extended:
            self._add_complete_edge(closing)

    def _pair_keys(self, triples, s, t):
        return triples[:, s] * _KEY + triples[:, t]

    def _add_complete_edge(self, closing):
        self.pair_vars = {}
        base = self.nvar
        for s, t in PAIRS:
            keys = np.unique(self._pair_keys(self.entries, s, t))
            self.pair_vars[(s, t)] = (keys, base)
            base += len(keys)
        triples = self.entries
        if closing:
            grid = np.stack(np.unravel_index(np.arange(int(np.prod(self.shape))), self.shape), 1)
            ok = np.ones(len(grid), dtype=bool)
            for s, t in PAIRS:
                ok &= np.isin(self._pair_keys(grid, s, t), self.pair_vars[(s, t)][0])
            observed = np.ravel_multi_index(tuple(self.entries.T), self.shape)
            ok[observed] = False
            self.closing = grid[ok]
            triples = np.vstack([self.entries, self.closing])
        prod = np.concatenate([self.phi0 + np.arange(self.u),
                               base + np.arange(len(self.closing))])
        self.nvar = base + len(self.closing)
        a, b, c = (triples[:, k] + self.offsets[k] for k in range(3))
        ab, ac, bc = (self.pair_vars[(s, t)][1]
                      + np.searchsorted(self.pair_vars[(s, t)][0], self._pair_keys(triples, s, t))
                      for s, t in PAIRS)
        zero, one = np.zeros(len(triples)), np.ones(len(triples))
        # mass of each vertex of the monomial's 0/1 cube >= 0 (inclusion-exclusion); the mass
        # of (1,1,1) is the product variable's lower bound 0
        for pair in (ab, ac, bc):  # (1,1,0)-type vertices: pair - abc >= 0
            self.blocks.append((np.stack([prod, pair], 1), np.array([1.0, -1.0]), zero))
        for single, p1, p2 in ((a, ab, ac), (b, ab, bc), (c, ac, bc)):  # a - ab - ac + abc >= 0
            self.blocks.append((np.stack([single, p1, p2, prod], 1),
                                np.array([-1.0, 1, 1, -1]), zero))
        self.blocks.append((np.stack([a, b, c, ab, ac, bc, prod], 1),  # the (0,0,0) vertex
                            np.array([1.0, 1, 1, -1, -1, -1, 1]), one))

    def groups(self, s, t):
        """Entry ids grouped by their (mode s, mode t) indices."""
        keys = self._pair_keys(self.entries, s, t)
        order = np.argsort(keys, kind="stable")
        return np.split(order, np.flatnonzero(np.diff(keys[order])) + 1)

    def two_links(self):
        """Every 2-link inequality phi_e1 + theta_v - phi_e0 <= 1 (e0 != e1 share two indices)."""
        cols = []
        for s, t in PAIRS:
            other = 3 - s - t
            for g in self.groups(s, t):
                if len(g) < 2:
                    continue
                e0, e1 = np.meshgrid(g, g, indexing="ij")
                keep = e0 != e1
                e0, e1 = e0[keep], e1[keep]
                cols.append(np.stack([self.phi0 + e1, self.bits[e0, other], self.phi0 + e0], 1))
        cols = np.vstack(cols)
        return cols, np.array([1.0, 1, -1]), np.ones(len(cols))

    def neighbours(self):
        """For each pair type, each entry's neighbours sharing that pair of indices."""
        tables = []
        for s, t in PAIRS:
            table = [np.zeros(0, dtype=np.int64)] * self.u
            for g in self.groups(s, t):
                for x in g:
                    table[x] = g[g != x]
            tables.append(table)
        return tables

    def separate_running_intersection(self, x, tables, tol=1e-7):
        """Most violated RI (two neighbours) and triangle (three) rows at each centre."""
        phi = x[self.phi0:self.phi0 + self.u]
        ri, tri = [], []
        best = [[(-1.0, -1) if len(tb[e]) == 0 else
                 (phi[tb[e]].max(), int(tb[e][np.argmax(phi[tb[e]])])) for e in range(self.u)]
                for tb in tables]
        # types (0,1) and (0,2) meet in mode 0, (0,1) and (1,2) in mode 1, (0,2), (1,2) in mode 2
        for ta, tb, mode in ((0, 1, 0), (0, 2, 1), (1, 2, 2)):
            for e in range(self.u):
                (va, na), (vb, nb) = best[ta][e], best[tb][e]
                if na >= 0 and nb >= 0 and va + vb - phi[e] - x[self.bits[e, mode]] > tol:
                    ri.append([self.phi0 + na, self.phi0 + nb, self.phi0 + e, self.bits[e, mode]])
        for e in range(self.u):
            (va, na), (vb, nb), (vc, nc) = (best[t][e] for t in range(3))
            if min(na, nb, nc) >= 0 and va + vb + vc - 2 * phi[e] - 1 > tol:
                tri.append([self.phi0 + na, self.phi0 + nb, self.phi0 + nc, self.phi0 + e])
        blocks = []
        if ri:
            blocks.append((np.array(ri), np.array([1.0, 1, -1, -1]), np.zeros(len(ri))))
        if tri:
            blocks.append((np.array(tri), np.array([1.0, 1, 1, -2]), np.ones(len(tri))))
        return blocks, len(ri), len(tri)

    def n_rows(self, extra=()):
        return sum(len(b[2]) for b in list(self.blocks) + list(extra))

    def solve_lp(self, c, extra=()):
        """(LP minimum, solution, seconds)."""
        rows, cols, vals, rhs, r0 = [], [], [], [], 0
        for block_cols, coefs, b in list(self.blocks) + list(extra):
            m, w = block_cols.shape
            rows.append(np.repeat(np.arange(r0, r0 + m), w))
            cols.append(block_cols.ravel())
            vals.append(np.tile(coefs, m))
            rhs.append(b)
            r0 += m
        matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(r0, self.nvar))
        objective = np.zeros(self.nvar)
        objective[self.phi0:self.phi0 + self.u] = c
        t = time.perf_counter()
        res = linprog(objective, A_ub=matrix, b_ub=np.concatenate(rhs), bounds=(0, 1),
                      method="highs")
        if res.status != 0:
            raise RuntimeError(f"LP failed: {res.message}")
        return float(res.fun), res.x, time.perf_counter() - t

    def point(self, theta):
        """The integer point of atom ``theta`` (for SCIP's warm start)."""
        x = np.zeros(self.nvar)
        x[:self.phi0] = theta
        x[self.phi0:self.phi0 + self.u] = np.all(theta[self.bits], axis=1)
        if self.extended:
            for (s, t), (keys, base) in self.pair_vars.items():
                x[base:base + len(keys)] = (theta[keys // _KEY + self.offsets[s]]
                                            & theta[keys % _KEY + self.offsets[t]])
            if len(self.closing):
                x[self.nvar - len(self.closing):] = np.all(
                    theta[self.closing + self.offsets[:-1]], axis=1)
        return x


# ---------------------------------------------------------------------------------------------
# SCIP on a strengthened model

def _lp_file(relax, extra, c):
    parts = ["Minimize\n obj:"]
    nz = np.flatnonzero(c)
    parts.append("".join(" %+.17g x%d" % (v, relax.phi0 + j) for j, v in zip(nz, c[nz])))
    parts.append("\nSubject To\n")
    for cols, coefs, rhs in list(relax.blocks) + list(extra):
        m, w = cols.shape
        line = "".join(" %+g x%%d" % v for v in coefs) + " <= %.17g\n"
        values = np.empty((m, w + 1), dtype=object)
        values[:, :w] = cols
        values[:, w] = rhs
        parts.append((line * m) % tuple(values.ravel().tolist()))
    parts.append("Bounds\n")
    parts.append("".join(" 0 <= x%d <= 1\n" % j for j in range(relax.phi0, relax.nvar)))
    parts.append("Binaries\n")
    parts.append("".join(" x%d\n" % j for j in range(relax.phi0)))
    parts.append("End\n")
    return "".join(parts)


def scip_settle(relax, extra, c, level, theta, time_limit):
    """SCIP on the strengthened IP until its dual bound reaches ``level`` (settings as in
    ``ScipOracle``: direction scaled to max|c| = 1, tolerances 1e-9, no logicor presolve)."""
    from pyscipopt import Model
    unit = float(np.abs(c).max())
    model = Model()
    model.hideOutput()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "relax.lp")
        with open(path, "w") as handle:
            handle.write(_lp_file(relax, extra, c / unit))
        model.readProblem(path)
    model.setParam("constraints/logicor/maxprerounds", 0)
    model.setParam("numerics/feastol", 1e-9)
    model.setParam("numerics/dualfeastol", 1e-9)
    model.setParam("limits/time", time_limit)
    model.setParam("limits/dual", level / unit)
    by_name = {v.name: v for v in model.getVars()}
    sol = model.createSol()
    for j in np.flatnonzero(relax.point(theta) > 0.5):
        if f"x{j}" in by_name:
            model.setSolVal(sol, by_name[f"x{j}"], 1.0)
    model.addSol(sol, free=True)
    t = time.perf_counter()
    model.optimize()
    out = dict(time_s=time.perf_counter() - t, status=model.getStatus(),
               dual=model.getDualbound() * unit, nodes=model.getNNodes())
    model.free()
    return out


def scip_library(entries, shape, c, target, level, theta, time_limit):
    """The library's ScipOracle on the same question (standard model)."""
    with ScipOracle(entries, shape) as oracle:
        q = SeparationQuery(c, 0.0, target, level, deadline=Deadline(time_limit), hints=theta[None, :])
        t = time.perf_counter()
        answer = oracle.separate(q)
        stats = oracle.last_stats
    return dict(time_s=time.perf_counter() - t, status=answer.status,
                dual=stats.get("dual_bound", -math.inf), nodes=stats.get("nodes", 0))


# ---------------------------------------------------------------------------------------------

def measure(name, data, q, minimum, exact_minimum, args, ri_rounds):
    entries, shape = data["entries"], tuple(int(r) for r in data["shape"])
    c, level = data[f"c{q}"], float(data[f"level{q}"])
    target, theta = float(data[f"target{q}"]), data[f"theta{q}"].astype(bool)
    kind = "min" if exact_minimum else "best known"
    print(f"\n### {name}, query {q}: |U| = {len(entries)}, {kind} {minimum:.6e}, certify level "
          f"{level:.6e} (to settle: bound/{kind} <= {level / minimum:.5f})", flush=True)
    print("| relaxation | LP rows | extra vars | root bound / " + kind + " | LP time s |")
    print("|---|---|---|---|---|")
    std = Relaxation(entries, shape)
    links = std.two_links()

    def row(label, relax, extra=(), result=None):
        value, x, secs = result if result is not None else relax.solve_lp(c, extra)
        print(f"| {label} | {relax.n_rows(extra):,} | {relax.nvar - relax.phi0 - relax.u:,} | "
              f"{value / minimum:.4f} | {secs:.2f} |", flush=True)
        return x

    row("std (SCIP's model now)", std)
    x = row("std + all 2-link", std, [links])
    extra, tables = [links], None
    for rnd in range(ri_rounds):
        tables = tables or std.neighbours()
        cuts, n_ri, n_tri = std.separate_running_intersection(x, tables)
        if not cuts:
            break
        extra += cuts
        x = row(f"+ RI/triangle round {rnd + 1} (+{n_ri:,} RI, +{n_tri:,} tri)", std, extra)
    cer = Relaxation(entries, shape, extended=True)
    row("complete edge (CER)", cer)
    if args.closing or len(entries) < 1000:
        cer_cl = Relaxation(entries, shape, extended=True, closing=True)
        row(f"CER + {len(cer_cl.closing):,} closing triples", cer_cl)
    if args.scip_limit <= 0:
        return
    print(f"\nSCIP until the certify level, {args.scip_limit:.0f} s limit, hint as warm start:")
    print("| model | status | time s | final dual bound / " + kind + " | nodes |")
    print("|---|---|---|---|---|")
    runs = [("std (ScipOracle)", lambda: scip_library(entries, shape, c, target, level, theta,
                                                       args.scip_limit)),
            ("std + all 2-link", lambda: scip_settle(std, [links], c, level, theta,
                                                     args.scip_limit)),
            ("CER", lambda: scip_settle(cer, [], c, level, theta, args.scip_limit))]
    for label, fn in runs:
        r = fn()
        print(f"| {label} | {r['status']} | {r['time_s']:.2f} | {r['dual'] / minimum:.4f} | "
              f"{r['nodes']:,} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(),
                                                    "tensorcomp_relaxations"))
    ap.add_argument("--small-seeds", type=int, default=2,
                    help="10^3 instances (seeds 0..; 0 skips them)")
    ap.add_argument("--skip-large", action="store_true", help="10^3 queries only")
    ap.add_argument("--ri-rounds", type=int, default=5, help="RI separation rounds at 10^3")
    ap.add_argument("--ri-large", action="store_true",
                    help="one RI round at 20^3 too (its LP takes minutes)")
    ap.add_argument("--closing", action="store_true", help="CER + closing triples at 20^3 too")
    ap.add_argument("--scip-limit", type=float, default=60.0, help="seconds; 0: no SCIP runs")
    args = ap.parse_args()

    for seed in range(args.small_seeds):
        data = record(3, 10, 500, seed, args.cache)
        for q in range(int(data["count"])):
            if str(data[f"status{q}"]) != "certified":
                continue  # the negative answers: the queries a proof is needed for
            exact = brute_force_minimum(data["entries"], tuple(data["shape"]), data[f"c{q}"])
            measure(f"p=3, 10^3, n=500, seed {seed} ({data[f'status{q}']})", data, q, exact,
                    True, args, args.ri_rounds)
    if not args.skip_large:
        data = record(3, 20, 4000, 0, args.cache)
        q = 0  # the first exact call: a negative answer the search could not prove
        measure("p=3, 20^3, n=4000, seed 0", data, q, float(data[f"value{q}"]), False, args,
                1 if args.ri_large else 0)


if __name__ == "__main__":
    main()
