"""Worked example (docs/example.md): complete tensorly's IL-2 response tensor, offline.

The data ship inside tensorly (no download): responses of 8 cell types to 13 IL-2 muteins at
4 times and 12 doses, values in [0, 1], 192 of 4,992 entries never measured. We hide 20 % of the
measured entries, complete from the rest, check the hidden ones, draw, and export.

    python docs/example_il2.py [--out-dir DIR] [--time-limit 30] [--cli-time-limit 10]

Everything it writes (figures, model files, .tns files) goes to --out-dir, by default
results/example_il2 under the current directory (results/ is not tracked). The figures shown in
docs/example.md are regenerated only on request:

    python docs/example_il2.py --out-dir docs/img
"""
import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorly as tl
import xarray as xr
from tensorly.datasets import load_IL2data

from tensorcomp import CompletionResult, Observations
from tensorcomp.fitting import fit
from tensorcomp.tns import write_tns

ap = argparse.ArgumentParser()
ap.add_argument("--out-dir", type=Path, default=Path("results") / "example_il2",
                help="folder for the figures, model and .tns files (default: "
                     "results/example_il2; docs/img regenerates the documentation's figures)")
ap.add_argument("--time-limit", type=float, default=30.0,
                help="seconds for the whole fit() call (lambda search and final fit)")
ap.add_argument("--cli-time-limit", type=float, default=10.0,
                help="seconds for the command-line fit at the chosen lambda")
a = ap.parse_args()
a.out_dir.mkdir(parents=True, exist_ok=True)

# 1. load: a labelled DataArray (dimension names and coordinates from the dataset)
bunch = load_IL2data()
full = xr.DataArray(np.asarray(bunch.tensor, dtype=float), dims=bunch.dims,
                    coords={d: list(t) for d, t in zip(bunch.dims, bunch.ticks)},
                    name="response")
print(f"IL2: dims {full.dims}, shape {full.shape}, "
      f"{int(full.notnull().sum()):,} measured entries")

# 2. hide 20 % of the measured entries: they are the test set
rng = np.random.default_rng(0)
measured = np.argwhere(full.notnull().values)
test = measured[rng.choice(len(measured), size=len(measured) // 5, replace=False)]
train = full.copy()
train.values[tuple(test.T)] = np.nan
truth_test = full.values[tuple(test.T)]

# 3. observations keep the labels
obs = Observations.from_xarray(train)
print(obs)

# 4. fit: lambda by validation on the training entries, the whole call within --time-limit
res = fit(obs, lam="auto", time_limit=a.time_limit)
print(res)
print("lambda path (lam, validation MSE, train objective, status):")
for lam, val, obj, status in res.stats["lam_path"]:
    print(f"  {lam:8.4g}  {val:.5f}  {obj:.5f}  {status}")

# 5. validate on the hidden entries
pred = res.predict(test)
mse = float(np.mean((pred - truth_test) ** 2))
nmse = float(np.sum((pred - truth_test) ** 2) / np.sum(truth_test ** 2))
mean_only = float(np.mean((np.nanmean(train.values) - truth_test) ** 2))
print(f"held-out: MSE {mse:.5f}, NMSE {nmse:.4f} (predicting the training mean: MSE "
      f"{mean_only:.5f})")

# 6. pictures
ax = res.plot_convergence()
ax.figure.savefig(a.out_dir / "il2_convergence.png", dpi=100)
ax = res.plot_lambda_path()
ax.figure.savefig(a.out_dir / "il2_lambda_path.png", dpi=100)
print(f"figures: {a.out_dir / 'il2_convergence.png'}, {a.out_dir / 'il2_lambda_path.png'}")

# 7. export: labelled DataArray, long table, tensorly CP tensor, model file
completed = res.to_xarray()
print(completed.sel(ligands="IL2 (Mono)", cells="Treg", times=4).round(3).values[:6])
print(res.to_frame().head(3).to_string(index=False))
cp = res.to_tensorly()
print(f"tensorly CPTensor rank {cp.rank}; max |cp_to_tensor - to_dense| = "
      f"{np.abs(tl.cp_to_tensor(cp) - res.to_dense()).max():.2e}")
model = res.save(a.out_dir / "il2_model.npz")
back = CompletionResult.load(model)
print(f"saved {model.name} ({model.stat().st_size:,} bytes); reloaded predictions identical: "
      f"{np.array_equal(back.predict(test), pred)}")

# 8. the command line on files: complete the training entries (.tns) at the chosen lambda,
#    then predict the hidden entries from the saved model
write_tns(a.out_dir / "il2_train.tns", obs.entries, obs.means, header="IL2 training entries")
write_tns(a.out_dir / "il2_test.tns", test, truth_test, header="IL2 held-out entries")
lam = f"{res.lam:.6g}"
for shown, args in [
    (f"tensorcomp complete il2_train.tns --shape 13,4,12,8 --lam {lam} --time-limit "
     f"{a.cli_time_limit:g} --model il2_cli.npz",
     ["complete", str(a.out_dir / "il2_train.tns"), "--shape", "13,4,12,8", "--lam", lam,
      "--time-limit", str(a.cli_time_limit), "--model", str(a.out_dir / "il2_cli.npz")]),
    ("tensorcomp predict il2_cli.npz il2_test.tns --out il2_pred.tns",
     ["predict", str(a.out_dir / "il2_cli.npz"), str(a.out_dir / "il2_test.tns"), "--out",
      str(a.out_dir / "il2_pred.tns")]),
]:
    print(f"$ {shown}")
    out = subprocess.run([sys.executable, "-m", "tensorcomp"] + args, capture_output=True,
                         text=True, check=True).stdout
    print(out.rstrip().replace(str(a.out_dir) + "/", ""))
from tensorcomp import read_tns  # noqa: E402
_, cli_pred, _ = read_tns(a.out_dir / "il2_pred.tns")
print(f"held-out MSE of the command-line model: {np.mean((cli_pred - truth_test) ** 2):.5f}")
