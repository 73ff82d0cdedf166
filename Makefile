# Everything runs inside .venv; torch is pinned and installed first so no CUDA build is ever pulled.
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
TORCH    ?= torch==2.13.0
CONFIG   ?= configs/ml-100k.toml
STAMP    := $(VENV)/.metarec-installed

.PHONY: setup demo test test-fast bench lint fetch clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

fetch: setup
	$(BIN)/metarec data fetch ml-100k

demo: fetch
	$(BIN)/metarec evaluate --config $(CONFIG)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/metarec llm fetch smollm2-135m
	$(BIN)/python benchmarks/bench_embed.py
	$(BIN)/python benchmarks/bench_evaluate.py
	$(BIN)/python benchmarks/bench_meta.py
	$(BIN)/python benchmarks/bench_serve.py
	$(BIN)/python benchmarks/bench_soak.py
	$(BIN)/python benchmarks/bench_tail.py
	$(BIN)/python benchmarks/bench_query_set.py
	$(BIN)/python benchmarks/bench_explain.py
	$(BIN)/python benchmarks/bench_text_tuning.py
	$(BIN)/python benchmarks/bench_kg.py
	$(BIN)/python benchmarks/bench_ray.py
	$(BIN)/python benchmarks/bench_ray_train.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_privacy.py
	$(BIN)/python benchmarks/bench_transfer.py
	$(BIN)/python benchmarks/bench_images.py
	@if [ -n "$$METAREC_TEST_PG_URL" ]; then $(BIN)/python benchmarks/bench_serve_ray.py; \
	else echo "bench_serve_ray.py skipped: set METAREC_TEST_PG_URL to a PostgreSQL database (see .ci/run)"; fi

# ruff (incl. mccabe complexity, C90) and mypy; settings live in pyproject.toml
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) runs .pytest_cache
