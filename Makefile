# Two commands on a fresh clone: `make demo` and `make test`. Java 17 is the one system prerequisite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VAR := $(CURDIR)/var
DEMO_DATE ?= $(shell date -u -d yesterday +%F)

# nightly_translations' model: the tiny offline T5 that `make demo` builds under var/models.
TRANSLATION_MODEL := hf:text2text-generation:$(VAR)/models/tiny-t5-en-fr

# The demo's Airflow, data and clusters all live under ./var, never in the user's home.
DEMO_ENV := AIRFLOW_HOME=$(VAR)/airflow \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	SPARK_TRITON_DATA_DIR=$(VAR)/data \
	AIRFLOW_SPARK_TRITON_HOME=$(VAR)/spark_triton \
	SPARK_TRITON_JVM_CACHE=$(VAR)/jvm_cache \
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
	SPARK_TRITON_TRANSLATION_MODEL=$(TRANSLATION_MODEL)

.PHONY: install demo test test-fast test-deployed lint clean java airflow browser

install: $(STAMP)

# The development install: Airflow-side package plus every extra the demo and the tests use (the
# embedded local backend and job stack, spark-submit, the demo models, MLflow models, pytest). Airflow components
# alone need only `pip install airflow-spark-triton` (README, Install).
# torch==2.13.0 first: the local CPU wheel satisfies the project's range, so no CUDA build is fetched.
# pip compiles every module (153 s of the install here; 64 s with --no-compile), and that stays: where
# PYTHONDONTWRITEBYTECODE=1 (this machine, CI), nothing else would write .pyc, and every Airflow task,
# driver and Triton server would compile pandas, torch and Airflow again (measured: more CPU in CI).
EXTRAS := local,spark-submit,models,mlflow,test
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

java:
	@java -version 2>&1 | grep -qE 'version "(17|21)' || { echo "Java 17 is required (java -version)"; exit 1; }

demo: install java
	mkdir -p $(VAR)
	$(DEMO_ENV) $(BIN)/airflow db migrate > $(VAR)/airflow-db-migrate.log 2>&1
	$(DEMO_ENV) $(BIN)/python -m airflow_spark_triton.demo --date $(DEMO_DATE)

# `make airflow`: the DAGs on a real Airflow (api-server, scheduler, dag-processor, triggerer;
# LocalExecutor, SQLite) under var/airflow-stack, as the deployed tests run it; Ctrl-C stops it all.
# PROFILE=celery: CeleryExecutor with two workers and a Redis broker, PostgreSQL as the metadata DB
# (throwaway servers, stopped with the rest).
PROFILE ?= local
airflow: install java
	mkdir -p $(VAR)
	PATH=$(CURDIR)/$(BIN):$$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
		SPARK_TRITON_DATA_DIR=$(VAR)/data AIRFLOW_SPARK_TRITON_HOME=$(VAR)/spark_triton \
		SPARK_TRITON_JVM_CACHE=$(VAR)/jvm_cache SPARK_TRITON_TRANSLATION_MODEL=$(TRANSLATION_MODEL) \
		$(BIN)/python -m tests.harness.airflow_stack --home $(VAR)/airflow-stack --profile $(PROFILE)

# The browser of the UI tests (tests/deployed: the run pages): Debian's chromium, which the `playwright`
# package of the test extra drives by path; playwright never downloads a browser. Installing needs root
# (CI runs as root); elsewhere install it once with `sudo apt-get install chromium`.
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "the UI tests need Debian's chromium: sudo apt-get install chromium"; exit 1; fi; }
	@chromium --version 2>/dev/null | tail -1

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Three test processes on the 2-core CI machine, each module whole on one of them (its fixtures and
# order kept): the deployed Airflow scenarios and the DAG faults mostly wait on schedulers, clusters
# and polls, so a third process fills the cores they leave idle (fresh clone, same machine: pytest
# 895 s with three, against 1,097 s with two). Each process has its own session root, Airflow home
# and ports. TEST_ARGS= (empty) runs everything in one process.
TEST_ARGS ?= -n 3 --dist loadscope --no-loadscope-reorder
test: install java lint browser bench-deps
	PATH=$(CURDIR)/$(BIN):$$PATH HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra --durations=30 $(TEST_ARGS)

test-fast: install
	PATH=$(CURDIR)/$(BIN):$$PATH HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra -m "not slow"

# `make test-deployed`: the deployed scenarios alone (also in `make test`), both profiles at once:
# LocalExecutor + SQLite (with the run pages in a browser), and CeleryExecutor (two workers, Redis)
# + PostgreSQL.
test-deployed: install java browser
	PATH=$(CURDIR)/$(BIN):$$PATH HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra --durations=0 \
		-n 2 --dist loadscope tests/deployed

# `make faults`: issue #5's fault suite (tests/faults) on the local backend and the Databricks
# emulator; prints the fault table and saves it to var/faults.json. `make test` runs the same tests.
.PHONY: faults
faults: install java
	mkdir -p $(VAR)
	PATH=$(CURDIR)/$(BIN):$$PATH HF_HUB_OFFLINE=1 FAULTS_REPORT=$(VAR)/faults.json \
		$(BIN)/python -m pytest -ra -m faults --durations=0

# `make bench`: MiniLM five ways on 20k documents: the package's three paths (plain torch, in-process
# UDF, Triton UDF) and the peers (Ray Data actor pool, mlflow.pyfunc.spark_udf); BENCH_ARGS=--quick
# for a 1.5k-document smoke run. `make bench-generation`: the same five paths for text generation
# (a t5-small-sized model built offline, 2k documents). `make bench-stability`: 3 runs at 3k, 20k
# and 50k documents and the spread of every ratio (about 3 h; an idle machine). Results land in
# benchmarks/results/ (smoke runs in benchmarks/results/tmp/).
.PHONY: bench bench-generation bench-stability bench-deps
BENCH_ARGS ?=
BENCH_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The bench extra (matplotlib, Ray Data, MLflow) on top of the development install, once per
# pyproject change: `make test` needs it too (tests/benchmarks runs every path, peers included, on a
# few rows), `make install` and the package's own install stay without it.
BENCH_STAMP := $(VENV)/.bench-installed
bench-deps: $(BENCH_STAMP) java
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[$(EXTRAS),bench]'
	touch $(BENCH_STAMP)

bench: bench-deps
	$(BENCH_ENV) $(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

bench-generation: bench-deps
	$(BENCH_ENV) $(BIN)/python -m benchmarks.bench --model t5-small $(BENCH_ARGS)

bench-stability: bench-deps
	$(BENCH_ENV) $(BIN)/python -m benchmarks.stability $(BENCH_ARGS)

clean:
	rm -rf $(VAR) .pytest_cache .ruff_cache
