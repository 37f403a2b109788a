# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU build of torch where there is no GPU (a local wheel on our machines, found by pip).
TORCH_VERSION ?= 2.13.0

.PHONY: setup system-deps test test-shipped demo lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[dev,eval]'
	# Numerical oracles for conformance tests; they pin older torch/numpy, so no deps.
	$(PIP) install -q --no-deps moshi==0.2.13 encodec==0.1.1
	touch $@

# Debian packages the project uses: speech synthesizers for corpus synthesis, sox,
# Chromium for the browser demo's end-to-end test, and the human-written English and
# French text `dsm data text` reads (fortunes, the King James Bible, French manual pages
# formatted by groff, the French Debian Reference and GIMP manual). Installed when
# missing (as root).
SYSTEM_PACKAGES := espeak-ng libespeak-ng1 flite festival festvox-kdlpc16k festvox-us-slt-hts \
	festvox-kallpc16k sox chromium fortunes bible-kjv bible-kjv-text manpages-fr groff-base \
	debian-reference-fr gimp-help-fr
TEXT_FILES := /usr/share/games/fortunes/humorists /usr/lib/bible.data /usr/share/man/fr/man7 \
	/usr/share/debian-reference/ch01.fr.html /usr/share/gimp/2.0/help/fr/index.html
FESTIVAL_VOICES := english/ked_diphone us/cmu_us_slt_arctic_hts english/kal_diphone
system-deps:
	@missing=""; \
	for cmd in espeak-ng flite festival sox chromium bible groff; do command -v $$cmd >/dev/null || missing="$$missing $$cmd"; done; \
	for voice in $(FESTIVAL_VOICES); do [ -d /usr/share/festival/voices/$$voice ] || missing="$$missing festival:$$voice"; done; \
	for file in $(TEXT_FILES); do [ -e $$file ] || missing="$$missing $$file"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
		else \
			echo "missing:$$missing; please install the Debian packages $(SYSTEM_PACKAGES)"; exit 1; \
		fi; \
	fi

test: setup system-deps
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc = 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# the bundled models' quality gates only (`make test` runs them too)
test-shipped: setup system-deps
	$(PY) -m pytest -q -m shipped

demo: setup
	$(VENV)/bin/dsm demo

lint: setup
	$(PY) -m ruff check dsm tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
