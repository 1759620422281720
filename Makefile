# vidspool: `make run` and `make test` set everything up on a fresh Debian machine.
SHELL := /bin/bash
PY := .venv/bin/python
BINDIR ?= /usr/local/bin

.PHONY: setup run test bench tiny-models install-cli clean

setup:
	@bash scripts/setup.sh

run: setup
	@mkdir -p spool
	$(PY) -m daemon run

# Tests run in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them (its
# module-scoped daemons shared): most tests wait on daemon processes, not on the CPU.
TEST_WORKERS ?= 4

test: setup
	@bash scripts/test-setup.sh
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run.py
	$(PY) bench/shared.py
	$(PY) bench/api.py
	$(PY) bench/speech.py
	$(PY) bench/talking_head.py
	$(PY) bench/previews.py
	$(PY) bench/webhooks.py
	$(PY) bench/acceleration.py
	$(PY) bench/soak.py

# Tiny random-weight models of every family (noise, for trying the video kinds offline).
tiny-models: setup
	HF_HUB_OFFLINE=1 $(PY) scripts/tiny_models.py models --prefix tiny-
	HF_HUB_OFFLINE=1 $(PY) scripts/tiny_wav2lip.py models/tiny-wav2lip
	HF_HUB_OFFLINE=1 $(PY) scripts/tiny_musetalk.py models/tiny-musetalk

# `vidspool` on PATH: a link to .venv/bin/vidspool in $(BINDIR); running it again changes nothing.
install-cli: setup
	@target="$(CURDIR)/.venv/bin/vidspool"; link="$(BINDIR)/vidspool"; \
	if [ -e "$$link" ] && [ ! -L "$$link" ]; then \
	  echo "install-cli: $$link exists and is not a link; remove it or choose BINDIR=..." >&2; exit 1; fi; \
	mkdir -p "$(BINDIR)" && ln -sfn "$$target" "$$link" && echo "$$link -> $$target"

clean:
	rm -rf .venv spool/* .pytest_cache
