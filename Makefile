# Two commands do everything on a fresh clone:  `make run` (the main job) and `make test` (the test suite).
# Both create the virtual environment in .venv/ first when it is missing or older than the pins.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTHON ?= python3.11

.PHONY: run test lab board env lock clean-env browser gpu-check
run: $(VENV)/.installed
	$(VENV)/bin/flair2 run $(ARGS)

# JupyterLab on the project, with its kernel: the library notebooks in nbs/, the pipeline in nbs/pipeline/, runs in outputs/.
lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. $(if $(filter 0,$(shell id -u)),--allow-root,) $(ARGS)

# TensorBoard on 127.0.0.1:6006 over outputs/ (every trained model logs there); ARGS: another folder, --port, --tracker mlflow.
board: $(VENV)/.installed
	$(VENV)/bin/flair2 board $(ARGS)

test: $(VENV)/.installed browser
	$(PY) -m pytest $(ARGS)

# The viewer's browser test drives Debian's Chromium (Playwright never downloads a browser here).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser test ..."; \
	  $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1; } \
	  || echo "warning: could not install chromium; the browser test will be skipped"; }

env: $(VENV)/.installed

# Direct dependencies are pinned in settings.ini (the dev environment has the optional wandb and mlflow trackers and the onnx extra too); constraints.txt freezes the whole resolved set (`make lock`).
$(VENV)/.installed: settings.ini setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,wandb,mlflow,onnx]' 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

lock:
	$(PY) -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^flair2' > constraints.txt

clean-env:
	rm -rf $(VENV)

# The device check (issue: prove the GPU paths): real-size on a GPU, CPU-sized elsewhere; report in outputs/gpu/ (ARGS: --steps, -s KEY VALUE, --out).
gpu-check: $(VENV)/.installed
	$(VENV)/bin/flair2 gpu-check $(ARGS)
