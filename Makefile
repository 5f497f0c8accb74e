# askflow — `make demo` runs the ask path locally, `make test` runs the suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo test gate eval bench clean
SHARED ?= ../shared

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
	$(MAKE) --no-print-directory gate

# A guard against retrieval regressions, not a target to tune to: the dev questions with all-MiniLM-L6-v2 (about
# 2 minutes; 0.589 hit@5 and 0.415 MRR@10 when the floors were set).
gate: venv
	@if [ -f $(SHARED)/eval/airflow-so-dev.jsonl ]; then \
	  ASKFLOW_EMBEDDING_MODEL=all-MiniLM-L6-v2 $(BIN)/askflow eval retrieval --corpus $(SHARED)/corpus/airflow-docs \
	    --questions $(SHARED)/eval/airflow-so-dev.jsonl --details eval-gate.jsonl \
	    --floor hit@5=0.55 --floor mrr@10=0.39; \
	else echo "retrieval gate not run: $(SHARED)/eval/airflow-so-dev.jsonl is not here" >&2; fi

eval: venv
	$(BIN)/askflow eval retrieval --corpus $(SHARED)/corpus/airflow-docs --questions $(SHARED)/eval/airflow-so-dev.jsonl

clean:
	rm -rf $(VENV)
