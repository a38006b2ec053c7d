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

$(STAMP): requirements.lock requirements-dev.lock job/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e job
	touch $@

# Spark and Daft for make bench, in a venv of their own: Daft pins a pyarrow older than the project's.
PEERS_VENV := bench/.venv
PEERS_STAMP := $(PEERS_VENV)/.installed

$(PEERS_STAMP): bench/peers.lock
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q -r bench/peers.lock
	touch $@

# The MLflow tracking server the tests start, in a venv of its own (tests/mlflow-server.lock says why).
MLFLOW_SERVER := $(TOOLS)/mlflow/bin/mlflow

$(MLFLOW_SERVER): tests/mlflow-server.lock
	test -x $(TOOLS)/mlflow/bin/python || $(PYTHON) -m venv $(TOOLS)/mlflow
	$(TOOLS)/mlflow/bin/python -m pip install -q -r tests/mlflow-server.lock
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
