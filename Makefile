# shardscore: every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS := .tools
HELM := $(TOOLS)/bin/helm
# Pytest options (e.g. make test PYTEST_ARGS="-k chart", make e2e-cluster E2E_ARGS="-k schedules").
PYTEST_ARGS ?=
E2E_ARGS ?=

.PHONY: venv demo test test-deps bench image model-image manifests e2e-cluster e2e-kind helm crds clean

venv: $(STAMP)

# uv makes the venvs and installs the locks into them: a fresh .venv took 114 s against pip's 297 s here, with the
# same versions (`uv pip freeze` against `pip freeze`). Downloads go to uv's cache (~/.cache/uv, UV_CACHE_DIR), which
# the venvs hard-link where they are on its disk, so a venv and the cache are not two copies. Every file is compiled
# to byte code at install: where PYTHONDONTWRITEBYTECODE is set (CI's machines), every Ray worker would compile what
# it imports again.
UV_VERSION := 0.13.10
UV := $(TOOLS)/uv/bin/uv
# $(call uv_install,VENV,WHAT): create VENV unless it exists, then install WHAT (uv pip install arguments) into it.
# --seed: with pip in it, as a venv of `python -m venv` has (image/derived/build.sh runs `python3 -m pip wheel`, and
# .venv/bin comes first on make test's PATH).
uv_install = (test -x $(1)/bin/python || $(UV) venv -q --seed --python $(PYTHON) $(1)) && \
	$(UV) pip install -q --python $(1)/bin/python --compile-bytecode $(2)

$(UV):
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/python -m pip install -q uv==$(UV_VERSION)

$(STAMP): requirements.lock requirements-dev.lock job/pyproject.toml | $(UV)
	$(call uv_install,$(VENV),-r requirements-dev.lock)
	$(call uv_install,$(VENV),--no-deps -e job)
	touch $@

# Spark and Daft for make bench, in a venv of their own: Daft pins a pyarrow older than the project's.
PEERS_VENV := bench/.venv
PEERS_STAMP := $(PEERS_VENV)/.installed

$(PEERS_STAMP): bench/peers.lock | $(UV)
	$(call uv_install,$(PEERS_VENV),-r bench/peers.lock)
	touch $@

# The MLflow tracking server the tests start, in a venv of its own (tests/mlflow-server.lock says why).
MLFLOW_SERVER := $(TOOLS)/mlflow/bin/mlflow

$(MLFLOW_SERVER): tests/mlflow-server.lock | $(UV)
	$(call uv_install,$(TOOLS)/mlflow,-r tests/mlflow-server.lock)
	touch $@

helm: $(HELM)

$(HELM):
	bash scripts/install-helm.sh $(TOOLS)

## crds: the CRDs of the KubeRay release the chart targets, into .tools/kuberay-crds (SHARDSCORE_KUBERAY_ARCHIVE:
## from a release archive instead of the Go module proxy; scripts/kuberay-crds.py).
crds:
	@$(PYTHON) scripts/kuberay-crds.py $(TOOLS)

## demo: score generated sample data on a local Ray cluster (the quick start).
demo: $(STAMP)
	$(VENV)/bin/shardscore demo

## test: the whole test suite (Ray cluster on loopback, S3, MLflow, PostgreSQL and Iceberg REST catalog servers, helm,
## charts); the CRDs first, so that a missing source stops it in seconds.
test: test-deps
	@# The job's and the test models' byte code too, which every driver and Ray worker imports (see UV_VERSION).
	$(PY) -m compileall -q job/shardscore tests/models
	PATH="$(CURDIR)/$(TOOLS)/bin:$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

## test-deps: what make test needs installed (venvs, helm, CRDs, PostgreSQL, the Iceberg REST server's jars).
test-deps: crds $(STAMP) $(HELM) $(MLFLOW_SERVER)
	bash scripts/install-postgres.sh
	bash scripts/install-iceberg-rest.sh $(TOOLS)

## bench: side-by-side benchmarks, results in bench/RESULTS.md (Spark and Daft from their own venv, bench/.venv).
bench: $(STAMP) $(PEERS_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/run.py

## image: build the container image (on a local debootstrap base when no registry is reachable).
image:
	bash image/build.sh

## model-image: a team's image derived from shardscore's, with its packages (folders, wheels, requirements) installed:
## make model-image MODEL_IMAGE=registry/team/scorer:1.0 MODEL_PACKAGES="path/to/mypkg" (image/derived/build.sh).
model-image:
	@test -n "$(MODEL_IMAGE)" -a -n "$(MODEL_PACKAGES)" || { echo "usage: make model-image MODEL_IMAGE=REF MODEL_PACKAGES='DIR_WHEEL_OR_REQUIREMENT ...'" >&2; exit 2; }
	bash image/derived/build.sh $(MODEL_IMAGE) $(MODEL_PACKAGES)

## manifests: regenerate manifests/ from the Helm chart.
manifests: $(HELM)
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" bash scripts/render-manifests.sh

## e2e-cluster: the cluster e2e (tests/e2e_cluster) on the local cluster: make cluster, the suite, make cluster-down
## (also on failure; SHARDSCORE_E2E_KEEP_CLUSTER=1 keeps it up).
e2e-cluster: crds $(STAMP) $(HELM)
	bash tests/e2e_cluster/run.sh $(E2E_ARGS)

## e2e-kind: the same suite on a kind cluster with the KubeRay operator 1.7.0 (skips where kind is missing).
e2e-kind: crds $(STAMP) $(HELM)
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" bash tests/e2e_kind/run.sh $(E2E_ARGS)

## cluster: a local Kubernetes cluster (2 nodes, KubeRay operator, the project's image); prints KUBECONFIG=<path>.
.PHONY: cluster cluster-build cluster-down
cluster:
	@bash cluster/cluster.sh up

## cluster-build: only what make cluster builds and caches (packages, components, test image); compiles at nice 19.
cluster-build:
	@bash cluster/cluster.sh build

## cluster-down: stop the local cluster and remove its state (the build cache stays).
cluster-down:
	@bash cluster/cluster.sh down

clean:
	rm -rf $(VENV) $(PEERS_VENV) $(TOOLS) demo-output bench/data bench/out image/.wheelhouse
