# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone: they create (or
# reuse) .venv, install the pinned dependencies from constraints.txt, build the package and run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DEPS_STAMP := $(VENV)/.deps-installed
ASAN_SITE := build/asan-site

.PHONY: demo test install deps sanitize bench clean

demo: install
	$(VENV)/bin/onnxprune demo

test: install
	$(VENV)/bin/pytest -m "not slow"
	$(MAKE) --no-print-directory sanitize

# Dependencies are resolved again only when the pins or the package metadata change.
$(DEPS_STAMP): constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt scikit-build-core pybind11 ninja
	$(PIP) install -c constraints.txt --no-build-isolation ".[test]"
	touch $@

deps: $(DEPS_STAMP)

# Rebuilds the extension incrementally (build/) and reinstalls the package into .venv.
install: $(DEPS_STAMP)
	$(PIP) install --no-build-isolation --no-deps .

# The native statistics tests against an AddressSanitizer + UndefinedBehaviorSanitizer build.
ASAN_ENV = PYTHONPATH=$(ASAN_SITE) ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)"
sanitize: $(DEPS_STAMP)
	$(PIP) install --no-build-isolation --no-deps --upgrade --target $(ASAN_SITE) \
	  -Cbuild-dir=build/asan -Ccmake.define.ONNXPRUNE_SANITIZE=ON -Ccmake.define.ONNXPRUNE_CUDA=OFF .
	$(ASAN_ENV) $(PY) -P -c "import onnxprune._native as n; assert '$(ASAN_SITE)' in n.__file__, n.__file__"
	$(ASAN_ENV) $(VENV)/bin/pytest -q -p no:cacheprovider tests/test_stats.py tests/test_native_stub.py \
	  -k "not torch" -o addopts="--strict-markers --import-mode=importlib"

bench: install
	$(PY) -P benchmarks/bench_stats.py
	$(PY) -P benchmarks/bench_prune.py
	$(PY) -P benchmarks/bench_latency_flops.py
	$(VENV)/bin/pytest -m slow

clean:
	rm -rf build dist *.egg-info
