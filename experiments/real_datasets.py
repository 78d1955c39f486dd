"""Real nonnegative tensors shipped inside packages on PyPI, for ``bench_real.py``.

Every loader returns ``(tensor, info)``: a float64 array with NaN where nothing was measured,
and ``info`` with the dataset's ``kind``, ``source``, ``licence`` and what the loader did to it
(binning, clipping, scaling). Nothing is downloaded: the files come inside the wheels of the
``experiments`` extra (tensorly, scikit-learn, scikit-image, vega_datasets). Values are made
nonnegative where a few measurements fall below 0 (the count is in ``info``); a dataset that
is signed by construction is not included (tensorly's COVID-19 serology tensor is centred and
scaled: about half its values are negative).

  kinetic        fluorescence, 4-way   tensorly   Nikolajsen et al. 2003 (KU chemometrics)
  indian_pines   hyperspectral cube    tensorly   AVIRIS Indian Pines, CC BY 3.0
  il2            dose response, 4-way  tensorly   Orcutt-Jahns et al. 2021 (tensorly, BSD-3)
  digits         images                sklearn    UCI optdigits, CC BY 4.0
  astronaut      colour image          skimage    NASA, public domain
  us_employment  counts over time      vega       US Bureau of Labor Statistics, public domain
  sf_temps       sensor series         vega       NOAA hourly temperatures, public domain
"""
from __future__ import annotations

import numpy as np

__all__ = ["DATASETS", "load"]


def _block_mean(a: np.ndarray, factors: tuple) -> np.ndarray:
    """Mean over non-overlapping blocks of ``factors`` along each axis (edges cropped)."""
    shape = tuple(s // f for s, f in zip(a.shape, factors))
    a = a[tuple(slice(0, s * f) for s, f in zip(shape, factors))]
    split = []
    for s, f in zip(shape, factors):
        split += [s, f]
    return a.reshape(split).mean(axis=tuple(range(1, 2 * len(shape), 2)))


def _clip(tensor: np.ndarray, info: dict) -> np.ndarray:
    negative = np.nan_to_num(tensor, nan=0.0) < 0
    tensor[negative] = 0.0
    info["n_clipped_negative"] = int(negative.sum())
    return tensor


def kinetic():
    """Kinetic fluorescence of catecholamine mixtures (``tensorly.datasets.load_kinetic``):
    experiments x emission (12) x excitation (10) x time (60), with its missing-value mask.
    The five measurements the data's authors flag as outliers are dropped and every second
    time point kept: (59, 12, 10, 30). Source: Nikolajsen, Booksh, Hansen & Bro, Analytica
    Chimica Acta 475 (2003) 137-150, distributed by the University of Copenhagen's chemometrics
    group "available for public use", shipped in tensorly (BSD-3-Clause)."""
    from tensorly.datasets import load_kinetic

    bunch = load_kinetic()
    tensor = np.array(bunch.tensor, dtype=np.float64)
    tensor[np.asarray(bunch.missing_values_position, dtype=bool)] = np.nan
    outliers = set(bunch.outlier_measurements_idx)
    keep = [i for i in range(tensor.shape[0]) if i not in outliers]
    tensor = tensor[keep][:, :, :, ::2]
    info = {"kind": "fluorescence", "source": "tensorly load_kinetic (Nikolajsen et al. 2003)",
            "licence": "public use (KU chemometrics datasets page); tensorly BSD-3-Clause"}
    return _clip(tensor, info), info


def indian_pines():
    """AVIRIS hyperspectral image of the Indian Pines test site (``tensorly.datasets.
    load_indian_pines``, 145 x 145 pixels x 200 bands, radiance counts): 3 x 3 pixel blocks
    averaged and every second band kept, (48, 48, 100), divided by 1000. Source: Baumgardner,
    Biehl & Landgrebe, Purdue University Research Repository, doi:10.4231/R7RX991C; licence
    CC BY 3.0."""
    from tensorly.datasets import load_indian_pines

    cube = np.array(load_indian_pines().tensor, dtype=np.float64)
    tensor = _block_mean(cube, (3, 3, 1))[:, :, ::2] / 1000.0
    info = {"kind": "hyperspectral", "source": "tensorly load_indian_pines (AVIRIS, Purdue)",
            "licence": "CC BY 3.0"}
    return _clip(tensor, info), info


def il2():
    """IL-2 mutein signalling responses (``tensorly.datasets.load_IL2data``): ligands (13) x
    times (4) x doses (12) x cell types (8), 192 entries not measured. Source: Orcutt-Jahns et
    al. 2021, "Multivalency enhances the specificity of Fc-cytokine fusions", shipped in tensorly
    (BSD-3-Clause)."""
    from tensorly.datasets import load_IL2data

    tensor = np.array(load_IL2data().tensor, dtype=np.float64)
    info = {"kind": "dose response", "source": "tensorly load_IL2data (Orcutt-Jahns et al.)",
            "licence": "tensorly BSD-3-Clause"}
    return _clip(tensor, info), info


def digits():
    """Handwritten digits, 1797 images of 8 x 8 pixels, grey levels 0-16
    (``sklearn.datasets.load_digits``): (1797, 8, 8). Source: UCI ML repository, "Optical
    Recognition of Handwritten Digits" (Alpaydin & Kaynak 1998), CC BY 4.0."""
    from sklearn.datasets import load_digits

    tensor = np.array(load_digits().images, dtype=np.float64)
    return tensor, {"kind": "images", "source": "scikit-learn load_digits (UCI optdigits)",
                    "licence": "CC BY 4.0"}


def astronaut():
    """The astronaut photograph (``skimage.data.astronaut``, 512 x 512 x RGB): 4 x 4 pixel
    blocks averaged, (128, 128, 3), divided by 255. Source: NASA (Eileen Collins), public
    domain."""
    from skimage import data

    tensor = _block_mean(np.asarray(data.astronaut(), dtype=np.float64), (4, 4, 1)) / 255.0
    return tensor, {"kind": "colour image", "source": "scikit-image data.astronaut (NASA)",
                    "licence": "public domain"}


#: us_employment: the industry series that are not sums of others (nonfarm, private,
#: goods/service totals) and not signed (nonfarm_change)
_EMPLOYMENT_SERIES = (
    "mining_and_logging", "construction", "durable_goods", "nondurable_goods",
    "wholesale_trade", "retail_trade", "transportation_and_warehousing", "utilities",
    "information", "financial_activities", "professional_and_business_services",
    "education_and_health_services", "leisure_and_hospitality", "other_services",
    "government")


def us_employment():
    """US employment by industry, monthly 2006-2015, thousands of jobs
    (``vega_datasets.local_data.us_employment``): years (10) x months (12) x industries (15),
    each industry divided by its mean (the series differ 60-fold in size; unscaled, the NMSE
    would score the largest few only). Source: US Bureau of Labor Statistics, public domain;
    vega_datasets BSD-3-Clause."""
    from vega_datasets import local_data

    frame = local_data.us_employment()
    values = frame[list(_EMPLOYMENT_SERIES)].to_numpy(dtype=np.float64)  # (120, 15)
    values = values / values.mean(axis=0)
    tensor = values.reshape(10, 12, len(_EMPLOYMENT_SERIES))
    return tensor, {"kind": "counts over time", "source": "vega_datasets us_employment (BLS)",
                    "licence": "public domain"}


def sf_temps():
    """Hourly air temperature in San Francisco, 2010, degrees Fahrenheit
    (``vega_datasets.local_data.sf_temps``): weeks (52) x weekdays (7) x hours (24), from
    2010-01-01 00:00; hours missing in the record are NaN. Source: NOAA, public domain;
    vega_datasets BSD-3-Clause."""
    from vega_datasets import local_data
    import pandas as pd

    frame = local_data.sf_temps()
    hours = ((pd.to_datetime(frame["date"]) - pd.Timestamp("2010-01-01"))
             // pd.Timedelta(hours=1)).to_numpy()
    flat = np.full(52 * 7 * 24, np.nan)
    ok = (hours >= 0) & (hours < flat.size)
    flat[hours[ok]] = frame["temp"].to_numpy(dtype=np.float64)[ok]
    info = {"kind": "sensor series", "source": "vega_datasets sf_temps (NOAA)",
            "licence": "public domain"}
    return _clip(flat.reshape(52, 7, 24), info), info


#: name -> (loader, fraction of the measured entries observed by every method)
DATASETS = {
    "kinetic": (kinetic, 0.05),
    "indian_pines": (indian_pines, 0.05),
    "il2": (il2, 0.5),
    "digits": (digits, 0.10),
    "astronaut": (astronaut, 0.10),
    "us_employment": (us_employment, 0.3),
    "sf_temps": (sf_temps, 0.10),
}


def load(name: str):
    """``(tensor, info)`` of dataset ``name`` (see ``DATASETS``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    tensor, info = DATASETS[name][0]()
    info.update(shape=tuple(int(s) for s in tensor.shape),
                n_measured=int(np.sum(~np.isnan(tensor))))
    return tensor, info
