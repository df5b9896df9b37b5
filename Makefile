.PHONY: setup demo test bench lint schema

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

bench: setup
	.venv/bin/python benchmarks/bus_overhead.py

lint: setup
	.venv/bin/ruff check qbus tests benchmarks
	.venv/bin/ruff format --check qbus tests benchmarks
	.venv/bin/deptry .
	.venv/bin/lint-imports --no-cache

schema: setup
	.venv/bin/qbus schema --out schemas/
