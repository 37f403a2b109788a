# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU build of torch where there is no GPU (a local wheel on our machines, found by pip).
TORCH_VERSION ?= 2.13.0

.PHONY: setup system-deps test demo lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[dev]'
	# Numerical oracles for conformance tests; they pin older torch/numpy, so no deps.
	$(PIP) install -q --no-deps moshi==0.2.13 encodec==0.1.1
	touch $@

# Speech synthesizers used by corpus synthesis and its tests (Debian packages).
system-deps:
	@if ! command -v espeak-ng >/dev/null || ! command -v flite >/dev/null || ! command -v sox >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng libespeak-ng1 flite sox >/dev/null; \
		else \
			echo "please install espeak-ng, libespeak-ng1, flite and sox (Debian packages)"; exit 1; \
		fi; \
	fi

test: setup system-deps
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc = 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

demo: setup
	$(VENV)/bin/dsm demo

lint: setup
	$(PY) -m ruff check dsm tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
