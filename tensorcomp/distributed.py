"""Observations past one machine: samples loaded, aggregated and kept on a Dask cluster, and a
certified solve over them (the design is in ``docs/distributed.md``).

    from distributed import Client
    data = DistributedData.from_npy_shards(client, index_paths, value_paths, shape, 64)
    result = tensorcomp.solve(data, lam=1.0)

Entries are split by a hash of the entry itself, so every repeat of one entry lands in the same
partition and aggregation (counts, sums, within-entry variance) never leaves it. Each shard is
read by a task on a worker, its samples routed to partitions once, and each partition
aggregated by a task of its own; the client process holds only per-partition scalars and the
Dask futures of the partitions. The futures keep their graph: a partition lost with its worker
is recomputed by Dask from the shards.

``solve(data, ...)`` runs the one-process driver, gap policy and certificate through the
``solver_parts`` hook (``tensorcomp.distributed_solve``): the data-bound operations of the
active set and the heuristic's rounds are map-reduce rounds over the partitions; weights, Gram
matrix, atom bits and the gap policy stay on the driver.

Dask is imported only when a ``DistributedData`` is built (the ``experiments`` extra
installs it).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid

import numpy as np

from tensorcomp.oracles.base import atom_offsets

from . import _distributed_tasks as T
from ._distributed_tasks import (GATHER_MAX_ENTRIES, ClusterFailure, entry_hash,
                                 partition_labels, split_samples)
from ._validation import InputError, as_shape, describe

__all__ = ["DistributedData", "ClusterFailure", "GatheredEntries", "entry_hash",
           "partition_labels", "split_samples", "GATHER_MAX_ENTRIES", "ROUND_RETRIES"]

#: a round whose futures fail for a cluster reason (a lost worker, a closed connection) is
#: resubmitted this many times; its tasks are idempotent
ROUND_RETRIES = 3


class GatheredEntries:
    """The distinct entries gathered on the driver (partition order): what the exact oracles
    are built on (``make_oracle`` reads ``entries`` and ``shape``)."""

    def __init__(self, shape, entries: np.ndarray, counts: np.ndarray) -> None:
        self.shape, self.order = tuple(shape), len(shape)
        self.entries, self.counts = entries, counts

    @property
    def n_entries(self) -> int:
        return int(self.entries.shape[0])


def _transient_errors() -> tuple:
    from distributed.client import FutureCancelledError
    from distributed.comm import CommClosedError
    return (FutureCancelledError, CommClosedError, asyncio.CancelledError,
            concurrent.futures.CancelledError, OSError, TimeoutError)


def _as_partition_count(n_partitions) -> int:
    if isinstance(n_partitions, bool) or not isinstance(n_partitions, (int, np.integer)) \
            or n_partitions < 1:
        raise InputError(f"n_partitions must be an integer >= 1, got {describe(n_partitions)}")
    return int(n_partitions)


def _as_paths(paths, name: str) -> list[str]:
    if isinstance(paths, (str, bytes, os.PathLike)) or not hasattr(paths, "__len__"):
        raise InputError(f"{name} must be a list of .npy paths, got {describe(paths)}")
    out = []
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"{name} must hold paths, got {describe(path)}")
        out.append(os.fspath(path))
    if not out:
        raise InputError(f"{name} is empty: at least one shard is needed")
    return out


class DistributedData:
    """Observed samples held by a Dask cluster, one aggregated partition per future.

    Build with :meth:`from_npy_shards`. The summary attributes are those of ``Observations``
    that ``solve`` reads: ``shape``, ``order``, ``n_samples``, ``n_entries``, ``within_ss``,
    ``total_ss``, ``value_scale``, plus ``positive_mean_sum`` (sum_x max(mean_x, 0)),
    ``negative_mean_count``, ``smallest_mean`` and ``observed_bits``; the samples themselves
    never come to the client. ``close()`` drops the partitions and the workers' caches.
    """

    def __init__(self, client, partitions: list, shape: tuple, summaries: list) -> None:
        self.client = client
        self.token = uuid.uuid4().hex
        self.shape = tuple(shape)
        self.order = len(self.shape)
        self.offsets = atom_offsets(self.shape)
        self.rho = int(self.offsets[-1])
        self._parts = list(partitions)
        scalars = np.array([s for s, _ in summaries], dtype=np.float64).reshape(
            len(summaries), len(T.SUMMARY_FIELDS))
        fields = dict(zip(T.SUMMARY_FIELDS, scalars.T))
        #: per-partition distinct entries (rounding bounds of per-partition sums)
        self.partition_entries = fields["n_entries"].astype(np.int64)
        self.n_samples = int(fields["n_samples"].sum())
        self.n_entries = int(self.partition_entries.sum())
        if self.n_samples == 0:
            raise InputError("the shards hold no samples: at least one observation is needed")
        # sums over partitions in partition order: deterministic for a given partition count
        self.within_ss = float(sum(fields["within_ss"]))
        self.total_ss = float(sum(fields["total_ss"]))
        self.positive_mean_sum = float(sum(fields["positive_mean_sum"]))
        self.negative_mean_count = int(fields["negative_means"].sum())
        self.smallest_mean = float(fields["smallest_mean"].min())
        self.observed_bits = np.logical_or.reduce([bits for _, bits in summaries])
        self.rounds = 0  # map-reduce rounds run, all callers together
        self._groups = self._group_by_worker()

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_npy_shards(cls, client, index_paths, value_paths, shape,
                        n_partitions) -> "DistributedData":
        """Samples from pairs of ``.npy`` shards, read by the workers (memory-mapped): shard i
        is an (n_i, p) integer array ``index_paths[i]`` (0-based) and an (n_i,) real array
        ``value_paths[i]``. The paths must be readable from every worker. Each shard's task
        checks it (dtypes, lengths, index range, finite values: an ``InputError`` naming the
        file, raised here before any solving) and routes its samples to ``n_partitions``
        partitions by entry hash; each partition is then aggregated by a task of its own.
        Choose ``n_partitions`` a small multiple of the worker count, each partition a few
        million entries at most."""
        from distributed import Client
        if not isinstance(client, Client):
            raise InputError(f"client must be a distributed.Client, got {describe(client)}")
        index_paths = _as_paths(index_paths, "index_paths")
        value_paths = _as_paths(value_paths, "value_paths")
        if len(index_paths) != len(value_paths):
            raise InputError(f"index_paths has {len(index_paths)} shards but value_paths has "
                             f"{len(value_paths)}")
        shape = as_shape(shape)
        n_partitions = _as_partition_count(n_partitions)
        splits = [client.submit(T.read_shard, ip, vp, shape, n_partitions, pure=False)
                  for ip, vp in zip(index_paths, value_paths)]
        pieces = [[client.submit(T.shard_piece, split, q, pure=False) for split in splits]
                  for q in range(n_partitions)]
        parts = [client.submit(T.aggregate, shape, *row, pure=False) for row in pieces]
        summaries = [client.submit(T.summary, part, shape, pure=False) for part in parts]
        try:
            gathered = client.gather(summaries)
        except BaseException:
            client.cancel(parts + summaries)
            raise
        return cls(client, parts, shape, gathered)

    @property
    def value_scale(self) -> float:
        """Mean squared observed value: f at the zero tensor (``Observations.value_scale``)."""
        return self.total_ss / self.n_samples

    # ------------------------------------------------------------------------------ rounds
    @property
    def n_partitions(self) -> int:
        return len(self._parts)

    def _group_by_worker(self) -> list[tuple[str | None, list[int]]]:
        """Partitions grouped by the worker holding them: one task per worker and round."""
        who = self.client.who_has(self._parts)
        groups: dict = {}
        for q, part in enumerate(self._parts):
            holders = sorted(who.get(part.key, ()))
            groups.setdefault(holders[0] if holders else None, []).append(q)
        return sorted(groups.items(), key=lambda item: item[1][0])

    def map_partitions(self, fn, *args) -> list:
        """One round: ``fn(token, qs, *args, *partitions)`` on every group of partitions, the
        results in partition order (None for empty partitions). A round lost to the cluster
        (a worker died, a connection closed) is resubmitted; Dask recomputes lost partitions
        from their shards. Raises ClusterFailure when it cannot finish."""
        last = None
        for attempt in range(ROUND_RETRIES + 1):
            futures = [self.client.submit(fn, self.token, qs, *args,
                                          *[self._parts[q] for q in qs], pure=False,
                                          workers=None if worker is None else [worker],
                                          allow_other_workers=True)
                       for worker, qs in self._groups]
            try:
                results = self.client.gather(futures)
            except InputError:
                raise
            except _transient_errors() as exc:
                last = exc
                self.client.cancel(futures)
                self._groups = self._group_by_worker()
                continue
            except Exception as exc:
                from distributed import KilledWorker
                if isinstance(exc, KilledWorker):
                    raise ClusterFailure(f"a round of {fn.__name__} kept killing workers: "
                                         f"{exc}") from exc
                raise
            self.rounds += 1
            out = [None] * len(self._parts)
            for (_, qs), res in zip(self._groups, results):
                for q, r in zip(qs, res):
                    out[q] = r
            return out
        raise ClusterFailure(f"a round of {fn.__name__} failed {ROUND_RETRIES + 1} times; the "
                             f"last error: {last!r}") from last

    def partition_holders(self) -> list[list[str]]:
        """The addresses of the workers holding each partition now (empty: being computed)."""
        who = self.client.who_has(self._parts)
        return [sorted(who.get(part.key, ())) for part in self._parts]

    def regroup(self) -> None:
        """Regroup the partitions by the workers holding them now (after a worker was lost
        and its partitions were recomputed elsewhere)."""
        self._groups = self._group_by_worker()

    # ------------------------------------------------------------------------------ solve
    def solver_parts(self, lam: float, options, *, seed: int, signed: bool):
        """The hook ``solve`` calls: the active set and the oracle over these partitions."""
        from .distributed_solve import solver_parts
        return solver_parts(self, lam, options, seed=seed, signed=signed)

    def gather_entries(self, limit: int = GATHER_MAX_ENTRIES) -> GatheredEntries:
        """The distinct entries and their counts on the driver, in partition order (for the
        exact stage). Refused above ``limit`` entries."""
        if self.n_entries > limit:
            raise InputError(f"{self.n_entries:,} distinct entries exceed the {limit:,} that "
                             f"may be gathered on the driver")
        pieces = [piece for piece in self.map_partitions(T.gather_entries) if piece is not None]
        return GatheredEntries(self.shape, np.concatenate([e for e, _ in pieces]),
                               np.concatenate([c for _, c in pieces]))

    def close(self) -> None:
        """Release the partitions and drop this dataset's worker caches."""
        try:
            self.client.run(T.forget, self.token)
        except Exception:  # noqa: BLE001 - a closed cluster has nothing left to drop
            pass
        self.client.cancel(self._parts)
        self._parts = []

    def __repr__(self) -> str:
        return (f"DistributedData(shape={self.shape}, n_samples={self.n_samples}, "
                f"distinct_entries={self.n_entries}, partitions={self.n_partitions}, "
                f"groups={len(self._groups)})")
