# Two commands do all set-up: `make run` and `make test`. Both create and reuse .venv/, installed
# from the lock file pylock.test.toml (PEP 751, hashes checked), so every machine gets the same versions.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
LOCK := pylock.test.toml
# uv compiles the locks and installs from them (pip reads no PEP 751 lock yet); it lives in a venv of
# its own, at one version, so that it is never part of the service.
LOCK_TOOLS := .venv-lock
UV := $(LOCK_TOOLS)/bin/uv
UV_VERSION := 0.13.9
LOCK_ARGS ?=
COMPILE = $(UV) pip compile pyproject.toml requirements-build.in --quiet --universal \
	--python-version 3.11 --generate-hashes --custom-compile-command 'make lock' $(LOCK_ARGS)

.PHONY: run test readme-examples lock check-lock test-latest clean

$(UV):
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install --quiet 'uv==$(UV_VERSION)'

$(INSTALLED): $(LOCK) pyproject.toml | $(UV)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(UV) pip install --quiet --python $(PY) -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(INSTALLED)

run: $(INSTALLED)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py loadprices
	$(PY) manage.py bootstrap_demo
	exec $(PY) manage.py serve

# pytest exits 5 when it collects no tests; say so rather than fail or pass silently.
test: $(INSTALLED)
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; status=0; fi; exit $$status

# README.md's example outputs and docs/images/, from a real run of the service in a temporary var/ on a
# free port (tools/readme_examples.py); headless Chromium takes the screenshots.
readme-examples: $(INSTALLED)
	$(PY) tools/readme_examples.py $(README_EXAMPLES_ARGS)

# Recompile the locks after a change to pyproject.toml; pins that still fit are kept.
# `make lock LOCK_ARGS=--upgrade` takes the newest versions pyproject.toml allows.
# The service's lock takes the test lock's versions, so that the image runs what the suite tested.
lock: | $(UV)
	$(COMPILE) --extra test -o pylock.test.toml
	$(PYTHON) tools/check_lock.py --pins > $(LOCK_TOOLS)/test-pins.txt
	$(COMPILE) --constraint $(LOCK_TOOLS)/test-pins.txt -o pylock.toml
	$(PYTHON) tools/check_lock.py --write

check-lock:
	$(PYTHON) tools/check_lock.py

# The suite against the newest releases pyproject.toml allows, in a venv of its own, so that an SDK
# release that changes what the provider adapters see is noticed before the lock takes it.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install --quiet --upgrade -e '.[test]'
	.venv-latest/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LOCK_TOOLS) .venv-latest var staticfiles
