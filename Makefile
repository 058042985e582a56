# oaml_mm developer entry points. Everything runs inside .venv, which `make install`
# creates from nothing (idempotent: it is redone only when the requirements change).
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.oaml_mm-installed
# The machine-wide pip configuration may point at a local CPU-only torch wheel, which
# cannot import PyPI's torchvision; the constraints file pins the PyPI pair.
PIP    := $(VPY) -m pip install --disable-pip-version-check -c requirements/constraints.txt
JOBS   ?= 2
# glibc malloc thresholds for every Python started here (oaml_mm/utils/malloc_tuning.py):
# freed activations stay in the heap instead of being unmapped and faulted in again.
export MALLOC_MMAP_THRESHOLD_ ?= 1073741824
export MALLOC_TRIM_THRESHOLD_ ?= 1073741824

.PHONY: install test test-fast demo bench clean lint

install: $(STAMP)

$(STAMP): setup.py requirements/runtime.txt requirements/mmcv.txt requirements/tests.txt requirements/mim.txt requirements/constraints.txt
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "pip>=23" "setuptools<82" wheel
	$(PIP) -r requirements/runtime.txt -r requirements/tests.txt
	@# openmim without its declared requirements (requirements/mim.txt says why).
	$(PIP) --no-deps -r requirements/mim.txt
	@# Keep a full mmcv the user installed; otherwise the compiled-ops-free mmcv-lite.
	@$(VPY) -c "import importlib.metadata as m; m.version('mmcv')" 2>/dev/null \
	  || $(PIP) -r requirements/mmcv.txt
	$(PIP) --no-build-isolation --no-deps -e .
	$(VPY) -c "import oaml_mm, torch, torchvision, mmpretrain; print('oaml_mm', oaml_mm.__version__, 'torch', torch.__version__)"
	@touch $(STAMP)

test: install
	$(VPY) -m pytest -n $(JOBS) -q tests

# The unit tests only: no subprocess trainings, kill/resume or end-to-end runs.
test-fast: install
	$(VPY) -m pytest -n $(JOBS) -q tests --ignore=tests/reliability \
	  --ignore=tests/test_e2e --ignore=tests/test_tools \
	  --deselect tests/test_synthface/test_demo.py

lint: install
	$(VPY) -m flake8 oaml_mm tools tests benchmarks configs projects
	$(VPY) -m isort --check-only --diff --settings-path setup.cfg oaml_mm tools tests benchmarks projects

# The demo's engine lives in projects/occlusion_study, imported from the checkout.
demo: install
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(VPY) tools/demo.py

bench: install
	$(VPY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache oaml_mm/.mim
