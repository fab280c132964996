# sync-scorer: `make run` (the main job on an embedded default) and `make test` (the whole suite,
# Kafka broker included) both install everything they need on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SYNC := $(VENV)/bin/sync-scorer
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: venv test run model model-cv bench lint proto kafka-jars kafka-up kafka-down helm clean

# helm for the chart tests: not a Debian package; built from the Go module proxy (about 2 min once)
HELM_VERSION := v3.19.5
HELM := .tools/bin/helm

$(STAMP): pyproject.toml scripts/install_system_deps.sh
	PYTHON=$(PYTHON) bash scripts/install_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[stream,media,dev]'
	touch $(STAMP)

venv: $(STAMP)

# The broker needs Java 17 + Maven (system deps) but not the Python venv.
kafka-jars:
	@bash scripts/install_system_deps.sh
	@bash scripts/kafka/fetch_jars.sh

kafka-up: kafka-jars
	@bash scripts/kafka/kafka_local.sh up

kafka-down:
	@bash scripts/kafka/kafka_local.sh down

# Go: from PATH when new enough, else fetched once from the Go module proxy (scripts/install_go.sh)
$(HELM):
	@bash scripts/install_system_deps.sh
	GO="$$(bash scripts/install_go.sh)" && GOTOOLCHAIN=local GOBIN=$(CURDIR)/.tools/bin "$$GO" install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

helm: $(HELM)

test: venv kafka-jars $(HELM)
	$(PY) -m pytest -q -p no:cacheprovider tests

run: venv kafka-jars
	$(SYNC) run-demo

# The shipped bundle is one network distilled from an ensemble (docs/training.md measures both):
# one network per seed in MEMBER_SEEDS, trained alike, joined so that their similarity curves are
# averaged (model_store/bundles/ensemble, 1.5.0); then the ensemble's first network trains 2400 more
# steps on the same clips to match the ensemble's window-loss distribution (make_model --teacher),
# so the streaming worker pays for one network. The members are kept in .cache/members; each takes
# about 30 min here, the distillation about 45 min.
MODEL_VERSION := 1.7.0
ENSEMBLE_VERSION := 1.5.0
MEMBER_SEEDS := 1234 777
MEMBERS := .cache/members
DISTIL := --distill-weight 5 --finetune-steps 2400 --finetune-sources all --finetune-freeze none \
  --finetune-dev-weight 1
# each bundle's narrowband/ companion (scoring/routed.py: jobs whose audio went through 8 kHz):
# 600 steps more with every window heard through a telephone band, the bundle itself as the teacher
# hearing the full band, the video side (weights and batch-norm statistics) kept exactly, so one
# cache of frame features serves both; about 6 min per bundle here
NARROWBAND := --band-limit 1 --distill-weight 5 --finetune-steps 600 --finetune-sources all \
  --finetune-freeze video --finetune-freeze-stats --finetune-dev-weight 1
comma := ,
empty :=
space := $(empty) $(empty)
# $(call member_dirs,NAME): the members' directories, comma-separated
member_dirs = $(subst $(space),$(comma),$(foreach s,$(MEMBER_SEEDS),$(MEMBERS)/$(1)-seed$(s)))

model: venv
	for s in $(MEMBER_SEEDS); do \
	  $(PY) -m model_store.training.make_model --seed $$s --out $(MEMBERS)/default-seed$$s || exit 1; done
	$(PY) -m model_store.training.ensemble --version $(ENSEMBLE_VERSION) \
	  --members $(call member_dirs,default) --out model_store/bundles/ensemble
	$(PY) -m model_store.training.make_model --from-bundle model_store/bundles/ensemble \
	  --teacher model_store/bundles/ensemble $(DISTIL) --version $(MODEL_VERSION) --out model_store/bundles/default
	$(PY) -m model_store.training.make_model --from-bundle model_store/bundles/default \
	  --teacher model_store/bundles/default $(NARROWBAND) --version $(MODEL_VERSION)-nb \
	  --out model_store/bundles/default/narrowband

# the two cross-validation folds `sync-scorer eval-real --cv-folds` judges the dev clips with (the
# same recipe on half the dev speakers each; their teachers stay in .cache/members)
model-cv: venv
	for f in 1 2; do \
	  for s in $(MEMBER_SEEDS); do \
	    $(PY) -m model_store.training.make_model --cv-fold $$f --seed $$s --out $(MEMBERS)/cv-fold-$$f-seed$$s \
	    || exit 1; done; \
	  $(PY) -m model_store.training.ensemble --version $(ENSEMBLE_VERSION) \
	    --members $(call member_dirs,cv-fold-$$f) \
	    --out $(MEMBERS)/cv-fold-$$f-ensemble || exit 1; \
	  $(PY) -m model_store.training.make_model --cv-fold $$f --from-bundle $(MEMBERS)/cv-fold-$$f-ensemble \
	    --teacher $(MEMBERS)/cv-fold-$$f-ensemble $(DISTIL) --version $(MODEL_VERSION) \
	    --out model_store/bundles/cv-fold-$$f || exit 1; \
	  $(PY) -m model_store.training.make_model --cv-fold $$f --from-bundle model_store/bundles/cv-fold-$$f \
	    --teacher model_store/bundles/cv-fold-$$f $(NARROWBAND) --version $(MODEL_VERSION)-nb \
	    --out model_store/bundles/cv-fold-$$f/narrowband || exit 1; done

bench: venv
	$(SYNC) bench --json

# the gRPC service's generated code, committed beside schemas/sync_scorer.proto
proto: venv
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. schemas/sync_scorer.proto

lint: venv
	$(VENV)/bin/ruff check worker schemas model_store tests

clean:
	rm -rf $(VENV) .kafka .cache
