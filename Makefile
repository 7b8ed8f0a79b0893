# Vitrine: two commands for a fresh machine.
#   make run   - set up (virtualenv, requirements) and run the whole stack on http://127.0.0.1:8000
#   make test  - lint, type-check and run the whole test suite against real services
# DATABASE_URL / CELERY_BROKER_URL select external services; unset, embedded ones are started.

# Python 3.12+ (the version we test on first) from PATH, else one installed by pyenv (whose
# shims may not be active).
PYTHON ?= $(shell for p in python3.12 python3.13 python3.14 python3 \
	$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V); do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint typecheck pytest setup chromium clean-data bench

# make run PORT=8001 serves on another port (the default is $PORT, else 8000).
run: setup
	$(BIN)/python -m webapp.stack run $(if $(PORT),--port $(PORT))

test: setup chromium
	$(BIN)/python -m webapp.stack exec --throwaway -- $(MAKE) --no-print-directory lint typecheck pytest

# The inner loop: no slow, dataset or browser tests (the README's `make test` runs them all).
test-fast: setup
	$(BIN)/python -m webapp.stack exec --throwaway -- $(MAKE) --no-print-directory pytest \
		PYTEST_ARGS='-m "not slow and not datasets and not browser" $(PYTEST_ARGS)'

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy webapp catalog search embeddings

pytest:
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || test -n "$(PYTHON)" || \
		{ echo "Vitrine needs Python 3.12 or newer (Django 6); none was found."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Browser tests (tests/browser) drive Debian's Chromium: install it when we can (as root),
# otherwise those tests skip with a message naming the missing browser.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver; fi

clean-data:
	rm -rf .data
