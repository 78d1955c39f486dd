"""The gap policy: the gap estimate Phi, the thresholds of every oracle query, what each answer
proves, and when a run stops. The driver loop (``solver.py``) asks it; tests drive it alone.

Contract
--------
* **Proofs only.** ``lower_bound`` rises only on proofs: the within-entry variance, and for a
  proven bound B on min_v <g, v> (the free bound sum_x min(g_x, 0), exact oracle answers) the
  convexity bound f* >= f(phi) + B - <g, phi>, shaded by the rounding error of the three floats it
  adds (``rounding_error``). The papers' shortcut (``published``: a heuristic's best value taken
  as the minimum) feeds ``estimated_bound``, never ``lower_bound``; a run that stops on it ends
  with status ``"uncertified"``, not ``"optimal"``.
* **Every positive answer makes progress.** Phi never falls below ``floor`` = max(tol / 4,
  RESOLUTION_FACTOR * K * r), where r bounds the rounding error of <g, phi> - <g, v> at the
  current data pass (``resolution``: it scales with sum |g|, so it follows the residuals down;
  a floor kept at the largest r seen would stay at the first passes' scale, orders of magnitude
  above the last ones', and end runs on large data as "stalled" far above tol). A positive answer v therefore satisfies
  <g, phi - v> >= Phi / K - r >= Phi / (2K) in exact arithmetic, and the exact line search
  towards it lowers f by at least ``min(delta / 2, delta^2 / (4 lam^2))`` with
  delta = floor / (2K) (the curvature of f along v - phi is at most 2 lam^2: |v_x - phi_x| <= 1
  and sum_x m_x = n).
* **Negative answers are finite.** Phi starts at most (<g, phi_0> - sum_x min(g_x, 0)) / 2, never
  grows, halves on each negative answer and stops at ``floor``. A negative answer to a query
  *asked* at the floor ends the run: with a proof at that query's level
  <g, phi> - max(Phi, 0.9 tol_at(f)) the gap is <= ``stop_tol()`` (``"optimal"``); without
  one, if the exact stage was asked (or the oracle cannot certify), ``"stalled"``; if it was not
  asked yet, the next query asks it (escalation: the composite oracle first tries more
  heuristic starts, then the integer program). What decides is the Phi the answered query was
  asked with (``asked_phi``), not Phi after the answer: ``rescale_first`` may lower Phi to the
  floor between a query and its answer, and a proof at the coarse level that query asked for
  says nothing about the gap at the floor (that query is then followed by one at the floor).
* **Bound on oracle calls** (no time limit needed): with f_0 the first objective and
  Delta = min(delta / 2, delta^2 / (4 lam^2)), delta = tol / (8K) (the smallest floor),

      oracle calls <= 2 (f_0 - f*) / Delta + log2(4 Phi_0 / tol) + 4

  (progress steps, at most as many steps without progress as with it plus the safety net's two,
  the halvings, the escalation). Local steps between oracle calls need a gap >= Phi >= floor as
  well, so they are finite too.
* **Safety net.** An oracle step whose atom does not lower the objective (a lying custom oracle,
  or rounding beyond ``resolution``) counts as no progress: the next query asks the exact stage,
  and a second one in a row ends the run with ``"stalled"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from tensorcomp.oracles.base import rounding_error

__all__ = ["GapPolicy", "Thresholds", "ACCURACY_K", "CERTIFY_FRACTION", "FLOOR_FRACTION",
           "RESOLUTION_FACTOR"]

#: weak-separation accuracy: a positive answer improves <g, .> by at least Phi / K
ACCURACY_K = 2.0
#: an exact oracle is asked to prove the gap down to this fraction of tol, not below (margin
#: for the oracles' own tolerances; a tighter proof cannot change the outcome)
CERTIFY_FRACTION = 0.9
#: Phi never goes below FLOOR_FRACTION * tol
FLOOR_FRACTION = 0.25
#: Phi / K must exceed the rounding error of <g, phi> - <g, v> by this factor
RESOLUTION_FACTOR = 4.0
#: consecutive oracle steps without objective decrease before the run stops as stalled
MAX_NO_PROGRESS = 2

@dataclass(frozen=True)
class Thresholds:
    """What one oracle query asks: a positive answer has <g, v> <= target; a negative one proves
    min_v <g, v> >= certify_level. exact_allowed: may a composite oracle run its exact stage."""

    target: float
    certify_level: float
    exact_allowed: bool


class GapPolicy:
    """Phi, the proven lower bound and the shortcut's estimate, and the stopping decisions.

    tol: absolute tolerance on the proven gap. within_bound: W, a proven bound on the part of
    the objective that no tensor can fit (the within-entry variance); the proven lower bound
    starts there. rel_tol: relative tolerance on the *fittable* part of the objective: the run
    also stops once f - L <= rel_tol * (L - W) (L the proven lower bound), so the gap that ends
    it is ``stop_tol()`` = max(tol, rel_tol * (L - W)). Measured against L itself, the
    irreducible W (say 9 with sigma = 3 and many repeats per entry) would allow gaps many times
    the part of f the fit can change. "optimal" proves f - f* <= f - L <= stop_tol(); with
    rel_tol > 0 that is f - f* <= max(tol, rel_tol * (f* - W)) since L <= f*. An exact query
    is asked to prove the level that would end the run, f - L <= ``tol_at(f)`` = max(tol,
    rel_tol * (f - W) / (1 + rel_tol)) (the same condition written with f). The floor of Phi
    (and so the termination bound) depends on the absolute tol only, and so does the lazy
    trigger until a proof makes L > W: a relative tolerance can only end a run sooner, never
    ask the exact stage where the absolute one would not.
    lazy: ask the exact stage only once Phi <= stop_tol() (a proof above that scale cannot end
    the run); otherwise on every query. published: the papers' uncertified shortcut.
    certifies: can the oracle prove bounds at all.
    """

    def __init__(self, tol: float, *, rel_tol: float = 0.0, lazy: bool = True,
                 published: bool = False, certifies: bool = True,
                 within_bound: float = 0.0) -> None:
        self.tol = float(tol)
        self.rel_tol = float(rel_tol)
        self.lazy, self.published, self.certifies = lazy, published, certifies
        #: proven bound on the part of f no tensor can fit; rel_tol applies to f - within_bound
        self.within_bound = float(within_bound)
        #: proven lower bound on f*
        self.lower_bound = self.within_bound
        #: the published shortcut's bound (heuristic minima treated as exact): NOT a proof
        self.estimated_bound = -math.inf
        self.phi = math.inf
        #: Phi of the last query (its thresholds): what a negative answer to it can prove
        self.asked_phi = math.inf
        self.floor = FLOOR_FRACTION * self.tol
        self.force_exact = False
        self.no_progress = 0
        self.message = ""

    # ------------------------------------------------------------------------------ proofs
    def prove(self, f: float, bound_on_min: float, gphi: float, error: float) -> None:
        """f* >= f + B - <g, phi> for a proven bound B on min_v <g, v>; ``error`` bounds the
        rounding of f, B and <g, phi> (see ``rounding_error``)."""
        if bound_on_min > -math.inf:
            shade = error + rounding_error(3, abs(f) + abs(bound_on_min) + abs(gphi))
            self.lower_bound = max(self.lower_bound, f + bound_on_min - gphi - shade)

    def stop_tol(self, bound: float | None = None) -> float:
        """The gap that ends the run: max(tol, rel_tol * (L - W)), L the proven lower bound (or
        ``bound``), W ``within_bound``."""
        bound = self.lower_bound if bound is None else bound
        return max(self.tol, self.rel_tol * max(bound - self.within_bound, 0.0))

    def tol_at(self, f: float) -> float:
        """The gap a new proof must reach at objective f to end the run: f - L <= rel_tol *
        (L - W) is f - L <= rel_tol * (f - W) / (1 + rel_tol)."""
        return max(self.tol,
                   self.rel_tol * max(f - self.within_bound, 0.0) / (1.0 + self.rel_tol))

    def stop_bound(self) -> float:
        """The bound the stopping test uses: the proven one, or the shortcut's estimate."""
        return max(self.lower_bound, self.estimated_bound)

    def stop_status(self, f: float) -> str | None:
        """"optimal" when the proven gap is <= stop_tol(), "uncertified" when only the
        shortcut's estimated gap is, else None."""
        if f - self.lower_bound <= self.stop_tol():
            return "optimal"
        if self.published and f - self.estimated_bound <= self.stop_tol(self.estimated_bound):
            return "uncertified"
        return None

    # ------------------------------------------------------------------------------ Phi
    def start(self, f: float, gphi: float, free_bound: float, resolution: float) -> None:
        """Phi_0 from the free bound: an upper bound on the Frank-Wolfe gap, halved."""
        self._set_floor(resolution)
        self.phi = max((gphi - free_bound) / 2.0, self.floor)

    def _set_floor(self, resolution: float) -> None:
        """The floor at the current data pass: never below FLOOR_FRACTION * tol, whatever the
        resolution does (the termination bound rests on that)."""
        self.floor = max(FLOOR_FRACTION * self.tol, RESOLUTION_FACTOR * ACCURACY_K * resolution)

    def query(self, f: float, gphi: float, resolution: float) -> Thresholds:
        """Thresholds of the next oracle call at objective f, <g, phi> = gphi, where
        ``resolution`` bounds the rounding error of <g, phi> - <g, v>."""
        self._set_floor(resolution)
        # f - f* <= f - L: a larger estimate only wastes oracle calls on halvings
        self.phi = max(min(self.phi, f - self.stop_bound()), self.floor)
        exact = (not self.lazy or self.phi <= self.stop_tol() or self.force_exact)
        if self.published:  # the papers: heuristics after the first call's optional IP
            exact = self.force_exact
        certify_gap = max(self.phi, CERTIFY_FRACTION * self.tol_at(f))
        self.asked_phi = self.phi
        return Thresholds(target=gphi - self.phi / ACCURACY_K,
                          certify_level=gphi - certify_gap, exact_allowed=exact)

    def rescale_first(self, gphi: float, value: float) -> float:
        """After the first call: the free bound overestimates the first gap by orders of
        magnitude; the best atom found is a far better scale for Phi (a step-size estimate,
        never a proof). Returns the target a positive answer must now meet."""
        if value < gphi:
            self.phi = max(min(self.phi, (gphi - value) / 2.0), self.floor)
        return gphi - self.phi / ACCURACY_K

    # ------------------------------------------------------------------------------ answers
    def on_progress(self, decreased: bool) -> str | None:
        """After an oracle step towards a positive answer. Returns "stalled" to stop."""
        if decreased:
            self.no_progress = 0
            self.force_exact = False
            return None
        self.no_progress += 1
        self.force_exact = True
        if self.no_progress >= MAX_NO_PROGRESS:
            self.message = ("oracle steps stopped lowering the objective (rounding at the "
                            "tolerance's scale); the gap could not be proven")
            return "stalled"
        return None

    def on_shortcut(self, f: float, gphi: float, value: float) -> None:
        """The published shortcut: take the heuristic's best value as the minimum."""
        self.estimated_bound = max(self.estimated_bound, f + value - gphi)
        self.phi = max((f - self.stop_bound()) / 2.0, self.floor)

    def on_negative(self, gphi: float, certified: bool, exact_asked: bool,
                    proven_min: float) -> str | None:
        """After a negative answer (no atom beat the target) to the last query. Halves Phi
        (never below the floor, and to the proven Frank-Wolfe gap when that is smaller).
        Returns "stalled" when the run must stop without a proof of gap <= stop_tol(): only
        when that query was asked at the floor (``asked_phi``), since only then was its certify
        level the one that ends the run (the caller tests for "optimal" first: a certified
        answer to such a query normally is one)."""
        at_floor = self.asked_phi <= self.floor
        self.phi = max(self.phi / 2.0, self.floor)
        if proven_min > -math.inf:
            self.phi = max(min(self.phi, (gphi - proven_min) / 2.0), self.floor)
        if not at_floor:
            if certified:
                self.force_exact = False
            return None
        if certified or exact_asked or not self.certifies:
            self.message = ("no improving atom found at the tolerance's resolution and the "
                            "oracle could not prove the gap")
            if self.floor > FLOOR_FRACTION * self.tol:
                self.message += (" (tol is below the floating-point resolution of the gradient: "
                                 f"gap estimates below {self.floor:.3g} are rounding noise)")
            return "stalled"
        self.force_exact = True  # escalate: the next query asks the exact stage
        return None
