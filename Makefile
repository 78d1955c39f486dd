# `make demo` and `make test` do all the set-up on a fresh machine (a virtual environment in
# .venv with the package and its test dependencies installed), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow clean

# setuptools prints an "Editable installation." notice for every editable install of a layout
# other than src/ (here: tensorcomp/ beside oracles/, which installs as tensorcomp.oracles); it
# warns of folders named like the package, and the only one is the package itself. That notice
# alone is silenced, by its message; any other warning of the build still shows.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" \
		$(PY) -m pip install --quiet -e '.[test,experiments]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tensorcomp demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) build *.egg-info
