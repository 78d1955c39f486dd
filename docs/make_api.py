"""Writes docs/api.md from the public names' docstrings (so the page matches the code).

    python docs/make_api.py          # rewrite docs/api.md
    python docs/make_api.py --check  # exit 1 if docs/api.md is out of date (a test runs this)
"""
import inspect
import sys
from pathlib import Path

import tensorcomp
from tensorcomp import frames, plotting, tns
from tensorcomp.result import STATUSES

OUT = Path(__file__).resolve().parent / "api.md"

SECTIONS = [
    ("Fitting", [tensorcomp.complete, tensorcomp.fit, tensorcomp.solve, tensorcomp.choose_lam]),
    ("Solver options", [tensorcomp.SolverOptions, tensorcomp.SolverOptions.preset,
                        tensorcomp.SolverOptions.published, tensorcomp.SolverOptions.paper_faithful,
                        tensorcomp.SolverOptions.from_dict, tensorcomp.SolverOptions.replace]),
    ("Observations", [tensorcomp.Observations, tensorcomp.Observations.from_dense,
                      tensorcomp.Observations.from_tns, tensorcomp.Observations.from_frame,
                      tensorcomp.Observations.from_xarray, tensorcomp.Observations.from_sparse]),
    ("Results", [tensorcomp.CompletionResult, tensorcomp.Certificate] + [
        getattr(tensorcomp.CompletionResult, name) for name in (
            "predict", "to_dense", "save", "load", "to_tensorly", "to_xarray", "to_frame",
            "predict_labels", "plot_convergence", "plot_lambda_path", "summary")]),
    ("Files (FROSTT .tns)", [tns.read_tns, tns.write_tns, tns.write_dense_tns]),
    ("Labelled data", [frames.observations_from_frame, frames.observations_from_xarray,
                       frames.observations_from_sparse, frames.attach_labels]),
    ("Pictures", [plotting.plot_convergence, plotting.plot_lambda_path]),
    ("Errors", [tensorcomp.InputError]),
]


def qualname(obj) -> str:
    module = obj.__module__
    if module.startswith("tensorcomp.") and obj.__name__ in tensorcomp.__all__:
        module = "tensorcomp"
    return f"{module}.{obj.__qualname__}"


def entry(obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        sig = ""
    doc = inspect.cleandoc(obj.__doc__ or "(no docstring)")
    return f"### `{qualname(obj)}{sig}`\n\n```text\n{doc}\n```\n"


def render() -> str:
    parts = ["# API reference\n",
             "Generated from the docstrings by `python docs/make_api.py`; do not edit by hand. "
             "The command line is documented by `tensorcomp --help` and "
             "`tensorcomp COMMAND --help`; a worked example is in [example.md](example.md).\n"]
    for title, objs in SECTIONS:
        parts.append(f"## {title}\n")
        parts.extend(entry(o) for o in objs)
    parts.append("## Statuses\n")
    parts.extend(f"- `{k}`: {v}" for k, v in STATUSES.items())
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")
