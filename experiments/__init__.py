"""Experiment runner for tensorcomp: published-grid reproduction, baselines, real data.

Entry points (run from the repository root):
  python -m experiments.run CONFIG.toml [--results PATH] [--workers N] [--scheduler ADDRESS]
  python -m experiments.summarize RESULTS.jsonl [--out DIR]

Modules: ``config`` (TOML -> list of runs), ``instances`` (synthetic and real data, the train /
held-out split), ``baselines`` (peer methods), ``metrics`` (exact CP-form errors), ``worker`` (one
run in one process: time, peak memory, metrics, never raises), ``runner`` (the grid on local
processes or a Dask cluster, resumable JSONL results), ``published`` (the papers' numbers),
``summarize`` (tables and figures).
"""
