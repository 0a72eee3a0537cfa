# The README's two commands: `make demo` (the main job) and `make test` (lint + tests).
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: setup test lint pytest demo train-demo clean

setup:
	@bash scripts/setup_env.sh

lint: setup
	$(PY) -m ruff check .

pytest: setup
	bash scripts/run_tests.sh

test: setup lint pytest

demo: setup
	$(PY) -m radardistill_ros.tools.demo

# Reproduces the shipped default model radardistill_ros/models/lite_demo.pt (+ MODEL_CARD.md, lite_demo.json).
train-demo: setup
	$(PY) -m training.train_demo

clean:
	rm -rf build .pytest_cache .ruff_cache
