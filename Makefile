# The README's two commands: `make demo` (the main job) and `make test` (lint + tests).
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: setup test lint pytest demo clean

setup:
	@bash scripts/setup_env.sh

lint: setup
	$(PY) -m ruff check .

pytest: setup
	bash scripts/run_tests.sh

test: setup lint pytest

demo: setup
	@echo "make demo: the detector demo (synthetic world -> rosbag2 -> node -> detections) lands with issue #7;"
	@echo "until then it only sets up the environment." ; exit 2

clean:
	rm -rf build .pytest_cache .ruff_cache
