PYTHON ?= python3

.PHONY: install system-packages demo test lint bench soak

install:
	$(PYTHON) -m pip install -q -e '.[mathics,test]'
	rk-jupyter add local --local --engine mathics --sys-prefix

system-packages:
	bash .ci/install-system-packages.sh
	PYTHON=$(PYTHON) sh .ci/install-browser.sh
	PYTHON=$(PYTHON) sh .ci/install-hub.sh

demo: install
	$(PYTHON) notebooks/run.py notebooks/quickstart.ipynb --kernel rk-local

test: install system-packages
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

bench: install system-packages
	$(PYTHON) benchmarks/run_all.py

soak: install system-packages
	$(PYTHON) tests/chaos.py --kernels 20 --minutes 10 --every 10 --kernel-log INFO
