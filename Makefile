# askflow — `make demo` runs the ask path locally, `make test` runs the suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo test eval bench clean

$(BIN)/.installed: pyproject.toml requirements-dev.txt dags/requirements.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, from this machine's CPU wheel (pip's config points at it); uv resolves the rest fast.
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0 uv
	# --compile-bytecode: as pip and the Cloud Functions build do; without it (and with PYTHONDONTWRITEBYTECODE, set on
	# these machines) every process compiles each module it imports, which doubles every start-up.
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

# checkov has its own environment: its pins would fight the project's.
.venv-checkov/bin/checkov:
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --disable-pip-version-check "checkov>=3,<4"

demo: venv
	$(BIN)/askflow demo

test: venv .venv-checkov/bin/checkov
	$(BIN)/ruff check .
	$(BIN)/pytest

eval: venv
	$(BIN)/askflow eval retrieval --corpus ../shared/corpus/airflow-docs --questions ../shared/eval/airflow-so-dev.jsonl

clean:
	rm -rf $(VENV)
