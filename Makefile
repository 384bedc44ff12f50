# The two commands: `make demo` (main job end to end) and `make test` (the test suite).
# Both create .venv on first use and start a private PostgreSQL if none answers at PGHOST:PGPORT.
SHELL := /bin/bash
RUN   := scripts/with_postgres.sh
PY    := .venv/bin/python

.PHONY: demo test venv lint lock ui erp-reset erp-summary erp-simulate erp-import crm-serve crm-reset bench clean

venv:
	@scripts/ensure_venv.sh

# ERP=tryton: the same demo against Tryton (include/adapters/tryton, its own venv .venv-tryton) in database
# $$TRYTON_DB (default tryton_demo); the reference sandbox's database is left alone. ERP=files: the reference ERP
# behind the CSV drop folder (include/adapters/csv_folder; exchange DB $$EXCHANGE_DB, default erp_exchange).
ERP ?= reference
demo: venv
	@$(if $(filter tryton,$(ERP)),ERP_DB=$${TRYTON_DB:-tryton_demo}) $(RUN) $(PY) -m include.demo --erp $(ERP) $(DEMO_ARGS)

# TEST_WORKERS: pytest-xdist workers, one test module each at a time (default: one per core).
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
test: venv
	@$(RUN) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: venv
	@.venv/bin/ruff check .

# The Airflow UI on the embedded default (SQLite metadata, LocalExecutor): http://localhost:8080, user admin,
# password in $$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated (docs/operations.md "Airflow UI").
ui: venv
	@$(RUN) bash -c '. scripts/env.sh && createdb "$$BRIDGE_DB" 2>/dev/null; \
	  $(PY) -m include.bridge.db migrate --console-role >/dev/null && \
	  PATH="$$ROOT/.venv/bin:$$PATH" exec airflow standalone'

# Regenerate the full lock from a clean install of requirements.txt.
lock:
	rm -rf .venv-lock && python3.11 -m venv .venv-lock && .venv-lock/bin/pip install -q -r requirements.txt
	(echo "# Full lock of a clean install of requirements.txt on Python 3.11 (regenerate: make lock)."; \
	 .venv-lock/bin/pip freeze) > constraints.txt && rm -rf .venv-lock

# ERP sandbox chores (see docs/sandboxes.md, "ERP sandbox").
erp-reset: venv
	@$(RUN) $(PY) -m include.sandbox.erp reset $(ERP_ARGS)
erp-summary: venv
	@$(RUN) $(PY) -m include.sandbox.erp summary
erp-simulate: venv
	@$(RUN) $(PY) -m include.sandbox.erp simulate --days $${DAYS:-1}
erp-import: venv
	@$(RUN) $(PY) -m include.sandbox.erp process-inbound

# CRM sandbox (see docs/sandboxes.md, "CRM sandbox"): serve on $CRM_SANDBOX_PORT (8765), data in .local/crm.
crm-serve: venv
	@. scripts/env.sh && $(PY) -m include.sandbox.crm serve $(CRM_ARGS)
crm-reset: venv
	@. scripts/env.sh && $(PY) -m include.sandbox.crm reset $(CRM_ARGS)

# Benchmarks: scripts that print figures (docs/benchmarks.md).
# One table per flow, each at three sizes; about 45 minutes on 2 cores (2026-12-08: the 1,000,000-SKU stock sync
# and the sandbox ERP's planning of 100,000 deals are a third of it).
bench: venv
	@$(RUN) $(PY) -m tests.benchmarks.bench_erp_seed
	@. scripts/env.sh && $(PY) -m tests.benchmarks.bench_crm_upsert
	@$(RUN) $(PY) -m tests.benchmarks.bench_erp_stock_to_crm
	@$(RUN) $(PY) -m tests.benchmarks.bench_erp_mirrors_to_crm
	@. scripts/env.sh && $(PY) -m tests.benchmarks.bench_master_data_match
	@$(RUN) $(PY) -m tests.benchmarks.bench_crm_orders_to_erp
	@for size in "2000 1000" "20000 10000" "100000 50000"; do set -- $$size; \
	  $(RUN) $(PY) -m tests.benchmarks.bench_stage3_and_reconcile --deals $$1 --skus $$2 || exit 1; done

clean:
	rm -rf .local .pytest_cache .ruff_cache
