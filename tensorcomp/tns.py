"""FROSTT ``.tns`` files: the sparse-tensor exchange format, read and written in streams.

One nonzero per line: p 1-based integer coordinates, then the value, separated by blanks. Lines
starting with ``#`` and blank lines are ignored. The shape is the largest coordinate per mode
unless given. Files ending in ``.gz`` (as FROSTT distributes them) are read and written through
gzip. See http://frostt.io/tensors/file-formats.html.

Reading never holds the file twice: a first pass counts lines (a byte count of newlines, no
parsing), then the (n, p) uint32 index and (n,) float64 value arrays are allocated once and
filled chunk by chunk; the only other memory is one chunk of lines. (uint32, not int64: 12 bytes
per sample less at p = 3; int64 only if a coordinate exceeds 2**32.)
"""
from __future__ import annotations

import gzip
import logging
import warnings
from itertools import islice
from pathlib import Path

import numpy as np

from ._validation import InputError

__all__ = ["read_tns", "write_tns", "write_dense_tns", "count_lines", "CHUNK_LINES"]

log = logging.getLogger("tensorcomp")

#: lines parsed per chunk: a few MB of text and parsed floats at FROSTT line lengths
CHUNK_LINES = 1 << 16
_COMMENT = "#"
_U32_LIMIT = 2**32


def _open(path, mode: str):
    """Text (or binary with "b") file object; gzip for names ending in .gz."""
    opener = gzip.open if Path(path).suffix.lower() == ".gz" else open
    if "b" in mode:
        return opener(path, mode)
    return opener(path, mode + "t", encoding="utf-8", errors="replace")


def count_lines(path) -> int:
    """Number of lines (an upper bound on the data lines), counted in 1 MB binary reads into
    one reused buffer (a plain read() of a large block would allocate that block each time)."""
    n, last = 0, 0x0A
    buf = bytearray(1 << 20)
    with _open(path, "rb") as fh:
        while True:
            k = fh.readinto(buf)
            if not k:
                break
            n += buf.count(b"\n", 0, k)
            last = buf[k - 1]
    return n + (last != 0x0A)


def _bad_line(path, first_line_no: int, lines, width: int | None) -> InputError:
    """The precise error for the first unparsable line of a chunk (slow path, errors only)."""
    for offset, line in enumerate(lines):
        text = line.strip()
        if not text or text.startswith(_COMMENT):
            continue
        fields = text.split()
        where = f"{path}, line {first_line_no + offset}"
        if width is not None and len(fields) != width:
            return InputError(f"{where}: expected {width} columns ({width - 1} coordinates and "
                              f"a value, as on the first data line), got {len(fields)}: "
                              f"{text[:80]!r}")
        for f in fields:
            try:
                float(f)
            except ValueError:
                return InputError(f"{where}: {f!r} is not a number: {text[:80]!r}")
    return InputError(f"{path}: could not parse lines {first_line_no}.."
                      f"{first_line_no + len(lines) - 1}")


def _first_data_line(path) -> tuple[int, str]:
    with _open(path, "r") as fh:
        for no, line in enumerate(fh, 1):
            text = line.strip()
            if text and not text.startswith(_COMMENT):
                return no, text
    raise InputError(f"{path} holds no data lines (only blanks or # comments)")


def read_tns(path, shape=None, *, order: int | None = None, values: bool = True,
             chunk_lines: int = CHUNK_LINES):
    """Read a ``.tns`` file.

    Parameters
    ----------
    path : str or Path
    shape : sequence of int, optional
        The tensor's shape; default: the largest coordinate in each mode.
    order : int, optional
        Number of coordinate columns. Default: the first data line's column count minus one
        (minus zero when ``values`` is False).
    values : bool
        False for a coordinates-only file (``tensorcomp predict``); a file with one extra
        column is accepted then and that column ignored.
    chunk_lines : int
        Lines parsed per chunk (memory/speed trade-off).

    Returns
    -------
    indices : (n, p) uint32 (int64 if a coordinate exceeds 2**32), 0-based
    vals : (n,) float64, or None when ``values`` is False
    shape : tuple of int

    Raises
    ------
    InputError
        naming the file and line: wrong column count, non-numbers, coordinates that are not
        positive integers or exceed ``shape``, non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist" if not path.exists()
                                else f"{path} is not a file")
    first_no, first = _first_data_line(path)
    n_cols = len(first.split())
    if order is None:
        order = n_cols - 1 if values else n_cols
    if order < 1 or n_cols not in ((order + 1,) if values else (order, order + 1)):
        want = f"{order + 1}" if values else f"{order} or {order + 1}"
        raise InputError(f"{path}, line {first_no}: expected {want} columns (coordinates"
                         f"{' then a value' if values else ''}), got {n_cols}: {first[:80]!r}")
    if shape is not None:
        shape = tuple(int(r) for r in shape)
        if len(shape) != order:
            raise InputError(f"shape {shape} has {len(shape)} modes but {path} has {order} "
                             f"coordinate columns")
    n_max = count_lines(path)
    wide = shape is not None and max(shape) > _U32_LIMIT
    indices = np.empty((n_max, order), dtype=np.int64 if wide else np.uint32)
    vals = np.empty(n_max, dtype=np.float64) if values else None
    n, line_no = 0, 1
    with _open(path, "r") as fh:
        while True:
            lines = list(islice(fh, chunk_lines))
            if not lines:
                break
            try:
                with warnings.catch_warnings():  # a chunk of only comments is fine
                    warnings.filterwarnings("ignore", "loadtxt: input contained no data")
                    block = np.loadtxt(lines, dtype=np.float64, comments=_COMMENT, ndmin=2)
            except ValueError:
                raise _bad_line(path, line_no, lines, n_cols) from None
            if block.shape[0]:
                if block.shape[1] != n_cols:
                    raise _bad_line(path, line_no, lines, n_cols)
                k = block.shape[0]
                coords = block[:, :order]
                _check_coords(path, coords, lines, line_no, shape)
                if indices.dtype == np.uint32 and coords.max() > _U32_LIMIT:
                    indices = indices.astype(np.int64)  # rare: coordinates beyond 2**32
                indices[n:n + k] = coords - 1  # exact integers (checked), cast on assignment
                if values:
                    v = block[:, order]
                    bad = ~np.isfinite(v)
                    if bad.any():
                        no = _line_of_row(lines, line_no, int(np.flatnonzero(bad)[0]))
                        raise InputError(f"{path}, line {no}: value {v[bad][0]} is not finite")
                    vals[n:n + k] = v
                n += k
            line_no += len(lines)
    if n == 0:
        raise InputError(f"{path} holds no data lines")
    indices = indices[:n]  # views: the few comment lines' slots are the only waste
    if values:
        vals = vals[:n]
    if shape is None:
        shape = tuple(int(v) + 1 for v in indices.max(axis=0))
    log.info("read %s: %d nonzeros, order %d, shape %s", path, n, order, shape)
    return indices, vals, shape


def _line_of_row(lines, first_line_no: int, row: int) -> int:
    """File line number of the row-th data line of a chunk."""
    seen = -1
    for offset, line in enumerate(lines):
        text = line.strip()
        if text and not text.startswith(_COMMENT):
            seen += 1
            if seen == row:
                return first_line_no + offset
    return first_line_no


def _check_coords(path, coords, lines, first_line_no, shape) -> None:
    frac = coords != np.floor(coords)
    low = coords < 1
    high = np.zeros_like(low) if shape is None else coords > np.asarray(shape)
    bad = frac | low | high
    if not bad.any():
        return
    row, k = (int(v[0]) for v in np.nonzero(bad))
    no = _line_of_row(lines, first_line_no, row)
    c = coords[row, k]
    if frac[row, k]:
        why = f"coordinate {k + 1} is {c}, not an integer"
    elif low[row, k]:
        why = f"coordinate {k + 1} is {c:.0f}; .tns coordinates are 1-based (>= 1)"
    else:
        why = f"coordinate {k + 1} is {c:.0f}, beyond shape[{k}] = {shape[k]}"
    raise InputError(f"{path}, line {no}: {why}")


def write_tns(path, indices, values, *, header: str | None = None,
              chunk_lines: int = CHUNK_LINES) -> Path:
    """Write 0-based ``indices`` (n, p) and ``values`` (n,) as a ``.tns`` file (1-based).

    Values are written with 17 significant digits, so reading them back is exact.
    """
    path = Path(path)
    idx = np.asarray(indices, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    with _open(path, "w") as fh:
        _write_rows(fh, idx, v, header, chunk_lines)
    return path


def _write_rows(fh, idx, v, header, chunk_lines) -> None:
    if header:
        fh.write("".join(f"# {line}\n" for line in header.splitlines()))
    fmt = " ".join(["%d"] * idx.shape[1] + ["%.17g"])
    for a in range(0, idx.shape[0], chunk_lines):
        b = a + chunk_lines
        rows = np.column_stack([idx[a:b] + 1, v[a:b]]) if idx.shape[1] else v[a:b, None]
        # float column_stack is exact for coordinates < 2**53
        np.savetxt(fh, rows, fmt=fmt)


def write_dense_tns(path, result, *, header: str | None = None,
                    observed=None, chunk_lines: int = CHUNK_LINES) -> Path:
    """Every entry of ``result``'s completed tensor as a ``.tns`` file, streamed block by block
    (the dense tensor is never held whole). ``observed``: optional (indices, values) written
    instead of the model's value at those entries (``keep_observed``)."""
    from .dense import dense_blocks
    path = Path(path)
    shape = tuple(result.shape)
    keep_pos = keep_val = None
    if observed is not None:
        keep_pos = np.ravel_multi_index(tuple(np.asarray(observed[0]).T), shape)
        order = np.argsort(keep_pos)
        keep_pos, keep_val = keep_pos[order], np.asarray(observed[1])[order]
    block_bytes = max(8 * chunk_lines, 1 << 20)
    with _open(path, "w") as fh:
        if header:
            fh.write("".join(f"# {line}\n" for line in header.splitlines()))
        for start, vals in dense_blocks(shape, result.weights, result.factors,
                                        block_bytes=block_bytes):
            stop = start + vals.size
            if keep_pos is not None:
                lo, hi = np.searchsorted(keep_pos, [start, stop])
                vals[keep_pos[lo:hi] - start] = keep_val[lo:hi]
            coords = np.stack(np.unravel_index(np.arange(start, stop), shape), axis=1)
            _write_rows(fh, coords, vals, None, chunk_lines)
    return path
