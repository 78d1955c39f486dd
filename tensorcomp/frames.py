"""Labelled data in and out: pandas long tables, xarray DataArrays, scipy.sparse / pydata sparse.

The readers build the class they are given (``Observations.from_frame`` passes itself), so this
module depends on no other of the package but validation.

Labels are kept per mode (``labels[k][i]`` is the label of index i in mode k) with the mode
names (``dims``), so a result predicts, exports and plots in the user's own terms. pandas,
xarray and sparse are optional (``pip install tensorcomp[io]``) and imported only when used.
"""
from __future__ import annotations

import numpy as np

from ._validation import InputError

__all__ = ["observations_from_frame", "observations_from_xarray", "observations_from_sparse",
           "result_to_frame", "result_to_xarray", "predict_labels", "attach_labels"]

#: largest long table ``result_to_frame()`` builds for all entries (rows)
MAX_FRAME_ROWS = 50_000_000


def _need(module: str, extra: str = "io"):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"this needs {module}: pip install {module} "
                          f"(or pip install 'tensorcomp[{extra}]')") from None


def _mode_codes(column, name):
    """(codes, labels) of one mode column: categories in their declared order (unobserved
    categories keep their index), other columns by sorted unique value."""
    pd = _need("pandas")
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = np.asarray(column.cat.codes, dtype=np.int64)
        labels = np.asarray(column.cat.categories)
    else:
        if column.isna().any():
            row = column.index[np.flatnonzero(column.isna().to_numpy())[0]]
            raise InputError(f"column {name!r} has a missing label at row {row!r}")
        codes, uniques = pd.factorize(column, sort=True)
        codes = np.asarray(codes, dtype=np.int64)
        labels = np.asarray(uniques)
    if (codes < 0).any():
        row = column.index[np.flatnonzero(codes < 0)[0]]
        raise InputError(f"column {name!r} has a missing label at row {row!r}")
    return codes, labels


def observations_from_frame(cls, frame, modes=None, value=None):
    """Observations (of class ``cls``) from a long table: one column per mode (labels), one
    value column.

    Parameters
    ----------
    frame : pandas.DataFrame
    modes : list of column names, optional
        The mode columns, in mode order. Default: every column except ``value``.
    value : column name, optional
        The value column. Default: the last column.

    Rows whose value is NaN are missing and dropped. Categorical columns keep all their
    categories (so labels never observed still get an index); other columns are mapped by their
    sorted distinct values. Repeated label tuples are repeated samples.
    """
    pd = _need("pandas")
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    columns = list(frame.columns)
    if value is None:
        if len(columns) < 2:
            raise InputError(f"frame needs at least one mode column and a value column, "
                             f"got columns {columns}")
        value = columns[-1]
    if value not in frame.columns:
        raise InputError(f"value column {value!r} is not in the table (columns: {columns})")
    if modes is None:
        modes = [c for c in columns if c != value]
    modes = list(modes)
    for c in modes:
        if c not in frame.columns:
            raise InputError(f"mode column {c!r} is not in the table (columns: {columns})")
        if c == value:
            raise InputError(f"column {c!r} is both a mode and the value column")
    if not modes:
        raise InputError("modes is empty: at least one mode column is needed")
    vals = frame[value]
    if not pd.api.types.is_numeric_dtype(vals) or pd.api.types.is_bool_dtype(vals):
        raise InputError(f"value column {value!r} must be numeric, got dtype {vals.dtype}")
    y = vals.to_numpy(dtype=np.float64, na_value=np.nan)
    codes, labels = zip(*(_mode_codes(frame[c], c) for c in modes))
    keep = ~np.isnan(y)
    if not keep.any():
        raise InputError(f"value column {value!r} has no observed (non-NaN) values")
    inf = np.isinf(y)
    if inf.any():
        row = frame.index[np.flatnonzero(inf)[0]]
        raise InputError(f"value column {value!r} is not finite at row {row!r}: {y[inf][0]}")
    indices = np.stack([c[keep] for c in codes], axis=1)
    shape = tuple(int(lab.size) for lab in labels)
    obs = cls(indices, y[keep], shape)
    return attach_labels(obs, labels=list(labels), dims=tuple(modes), value_name=value)


def observations_from_xarray(cls, array):
    """Observations (of class ``cls``) from an ``xarray.DataArray``: NaN entries are missing;
    dimension names and coordinates become the result's ``dims`` and ``labels``."""
    xr = _need("xarray")
    if not isinstance(array, xr.DataArray):
        raise InputError(f"array must be an xarray DataArray, got {type(array).__name__}")
    obs = cls.from_dense(array.values)
    labels = [np.asarray(array.coords[d].values) if d in array.coords else None
              for d in array.dims]
    return attach_labels(obs, labels=labels, dims=tuple(str(d) for d in array.dims),
                         value_name=None if array.name is None else str(array.name))


def observations_from_sparse(cls, array, shape=None):
    """Observations (of class ``cls``) from the *stored* entries of a scipy.sparse
    matrix/array or a pydata ``sparse.COO`` (explicitly stored zeros are observations; entries
    not stored are missing)."""
    module = type(array).__module__
    if module.startswith("scipy.sparse"):
        coo = array.tocoo()
        indices = np.stack([coo.row, coo.col], axis=1)
        values, full_shape = coo.data, coo.shape
    elif module.startswith("sparse"):  # pydata sparse: COO, GCXS, DOK
        coo = array.asformat("coo") if hasattr(array, "asformat") else array
        if coo.fill_value != 0 and not np.isnan(coo.fill_value):
            raise InputError(f"array has fill_value {coo.fill_value}: only stored entries are "
                             f"observations, so a nonzero fill value would be ignored")
        indices, values, full_shape = coo.coords.T, coo.data, coo.shape
    else:
        raise InputError(f"array must be a scipy.sparse matrix/array or a pydata sparse array, "
                         f"got {type(array).__name__}")
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise InputError(f"array must hold real numbers, got dtype {values.dtype}")
    if values.size == 0:
        raise InputError("array stores no entries: at least one observation is needed")
    return cls(np.asarray(indices, dtype=np.int64), values.astype(np.float64),
                        full_shape if shape is None else shape)


def attach_labels(target, *, labels=None, dims=None, value_name=None):
    """Set ``labels``/``dims``/``value_name`` on an Observations or CompletionResult
    (returns it). Each labels[k] must have shape[k] entries."""
    if labels is not None:
        labels = [None if lab is None else np.asarray(lab) for lab in labels]
        if len(labels) != len(target.shape):
            raise InputError(f"labels has {len(labels)} modes but the tensor has "
                             f"{len(target.shape)}")
        for k, (lab, r) in enumerate(zip(labels, target.shape)):
            if lab is not None and lab.shape != (r,):
                raise InputError(f"labels[{k}] has {lab.size} labels but mode {k} has size {r}")
    if dims is not None:
        dims = tuple(dims)
        if len(dims) != len(target.shape):
            raise InputError(f"dims {dims} has {len(dims)} names but the tensor has "
                             f"{len(target.shape)} modes")
    target.labels, target.dims, target.value_name = labels, dims, value_name
    return target


def _dims(result) -> tuple:
    return tuple(result.dims) if result.dims is not None else \
        tuple(f"mode_{k}" for k in range(len(result.shape)))


def result_to_frame(result, indices=None):
    """Long table of predictions: the mode columns (labels where known) and the value column
    (``value_name`` or "value"). ``indices`` (N, p): those entries; None: every entry."""
    pd = _need("pandas")
    from ._validation import as_index_array
    if indices is None:
        total = int(np.prod(np.asarray(result.shape, dtype=np.float64)))
        if total > MAX_FRAME_ROWS:
            raise InputError(f"the tensor has {total:,} entries, more than MAX_FRAME_ROWS="
                             f"{MAX_FRAME_ROWS:,} rows; pass indices=")
        idx = np.stack(np.unravel_index(np.arange(total), tuple(result.shape)), axis=1)
        values = result.to_dense().ravel()
    else:
        idx = as_index_array(indices, tuple(result.shape), name="indices")
        values = result.predict(idx)
    labels = result.labels or [None] * len(result.shape)
    cols = {}
    for k, d in enumerate(_dims(result)):
        cols[d] = idx[:, k] if labels[k] is None else labels[k][idx[:, k]]
    cols[result.value_name or "value"] = values
    return pd.DataFrame(cols)


def predict_labels(result, table):
    """Predictions (float64 array) at the label tuples in ``table`` (one column per ``dims``)."""
    pd = _need("pandas")
    if result.labels is None or result.dims is None:
        raise InputError("this result has no labels; use predict(indices)")
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    idx = np.empty((len(frame), len(result.shape)), dtype=np.int64)
    for k, d in enumerate(result.dims):
        if d not in frame.columns:
            raise InputError(f"table has no column {d!r} (the model's modes: {result.dims})")
        col = frame[d].to_numpy()
        lab = result.labels[k]
        if lab is None:
            idx[:, k] = col
            continue
        pos = pd.Index(lab).get_indexer(col)
        if (pos < 0).any():
            bad = col[np.flatnonzero(pos < 0)[0]]
            raise InputError(f"column {d!r}: label {bad!r} is not one the model was fitted on")
        idx[:, k] = pos
    return result.predict(idx)


def result_to_xarray(result, *, force=False, max_bytes=None):
    """The dense completed tensor as an ``xarray.DataArray`` with dims and coordinates."""
    xr = _need("xarray")
    kwargs = {"force": force} if max_bytes is None else {"force": force, "max_bytes": max_bytes}
    dense = result.to_dense(**kwargs)
    dims = _dims(result)
    labels = result.labels or [None] * len(dims)
    coords = {d: lab for d, lab in zip(dims, labels) if lab is not None}
    return xr.DataArray(dense, dims=dims, coords=coords, name=result.value_name)
