# Two commands for a newcomer: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
# The IaC linters (checkov, aws-sam-translator, cfn-lint, statelint) pin boto3/pydantic versions that conflict
# with requirements.txt, so they live in a venv of their own.
LINT_VENV := $(VENV)/lint
LINT_STAMP := $(LINT_VENV)/.installed-$(shell sha1sum requirements-lint.txt | cut -c1-12)

.PHONY: setup runtimes demo test lint typecheck lint-iac format bench addon sam-build deploy worker-image worker-image-local clean

setup: $(STAMP) $(LINT_STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

$(LINT_STAMP): requirements-lint.txt $(STAMP)
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-lint.txt
	rm -f $(LINT_VENV)/.installed-* && touch $@

# The Blender runtimes other than the .venv's own 5.0 (4.2 LTS, 4.5 LTS: pinned bpy, about 350 MB each to download),
# cached in .venv/runtimes/<series>/ (localcloud/runtimes.py). The local cloud would install one on first use; making
# them here keeps that download out of the tests' time. Each is installed once (a marker file), so this is quick after.
runtimes: $(STAMP)
	$(PY) -m localcloud.runtimes

demo: setup
	$(PY) scripts/demo.py

test: setup runtimes
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	@command -v podman >/dev/null 2>&1 || echo "test: no podman here: the worker image build (tests/test_worker_image.py) is skipped"
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# mypy over the shipped packages, as configured in pyproject.toml ([tool.mypy]).
typecheck: setup
	$(PY) -m mypy

lint-iac: setup
	$(LINT_VENV)/bin/cfn-lint template.yaml
	$(PY) -m pytest tests/test_template.py -q

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: setup
	@for script in $(filter-out bench/common.py,$(wildcard bench/*.py)); do echo "== $$script"; $(PY) $$script || exit 1; done

addon: setup
	$(PY) build_addon.py

# The Lambda packages as `sam deploy` uploads them: `sam build` when the SAM CLI is installed, else the same three
# makefile targets it would run (contract/Makefile, lambda/frame_counter/Makefile, lambda/worker_image/Makefile)
# into .aws-sam/build/<LogicalId>, so the package is built and import-checked anyway. Neither way needs python3.12
# or Docker. --build-in-source: the worker-image function packs container/ and contract/, outside its CodeUri.
SAM_BUILD := .aws-sam/build
SAM := $(shell command -v sam 2>/dev/null)
# samconfig.toml holds what `sam deploy --guided` saved (stack name, region, parameters); SAMCONFIG= names another.
SAMCONFIG ?= samconfig.toml
SAMCONFIG_GET = $(PYTHON) scripts/samconfig.py --config $(SAMCONFIG)
sam-build: $(if $(SAM),,$(STAMP))
	@if [ -n "$(SAM)" ]; then \
		echo "sam-build: running sam build ($$(sam --version))"; \
		sam build --build-in-source --config-file $(abspath $(SAMCONFIG)); \
	else \
		echo "sam-build: no sam command; running the makefile targets sam build would run, into $(SAM_BUILD)/"; \
		rm -rf $(SAM_BUILD)/ContractLayer $(SAM_BUILD)/FrameCounterFunction $(SAM_BUILD)/WorkerImageFunction && \
		$(MAKE) --no-print-directory -C contract build-ContractLayer ARTIFACTS_DIR=$(abspath $(SAM_BUILD))/ContractLayer && \
		$(MAKE) --no-print-directory -C lambda/frame_counter build-FrameCounterFunction \
			ARTIFACTS_DIR=$(abspath $(SAM_BUILD))/FrameCounterFunction PYTHON=$(abspath $(PY)) && \
		$(MAKE) --no-print-directory -C lambda/worker_image build-WorkerImageFunction \
			ARTIFACTS_DIR=$(abspath $(SAM_BUILD))/WorkerImageFunction PYTHON=$(abspath $(PY)); \
	fi
	@test ! -e $(SAM_BUILD)/FrameCounterFunction/render_on_aws || { echo "sam-build: the add-on leaked in"; exit 1; }
	@test ! -e $(SAM_BUILD)/FrameCounterFunction/bpy || { echo "sam-build: bpy leaked in"; exit 1; }
	@ls $(SAM_BUILD)/FrameCounterFunction/zstandard/*.cpython-312-*.so >/dev/null \
		|| { echo "sam-build: zstandard is not the Lambda's cp312 build"; exit 1; }
	@$(PYTHON) -I -c "import sys, zipfile; sys.path.insert(0, '$(SAM_BUILD)/ContractLayer/python'); \
		import render_contract; print('sam-build: layer OK,', render_contract.__file__); \
		zipfile.ZipFile('$(SAM_BUILD)/WorkerImageFunction/worker-context.zip').getinfo('container/Dockerfile'); \
		print('sam-build: the worker image function carries the build context')"
	@du -sh $(SAM_BUILD)/FrameCounterFunction $(SAM_BUILD)/ContractLayer $(SAM_BUILD)/WorkerImageFunction

# Deploys the stack (README.md, "Deploy to AWS"). The first time (no region saved in SAMCONFIG), or with GUIDED=1,
# `sam deploy --guided` asks for the region and the parameters and saves them in SAMCONFIG; after that a plain
# `sam deploy` reuses them. The deploy builds the worker image itself (template.yaml: WorkerImage) and ends only
# once it is in the stack's repository, so the first job after it runs. REGION= and PROFILE= are passed on.
deploy:
	@[ -n "$(SAM)" ] || { echo "deploy: the AWS SAM CLI is not installed (README.md, \"Deploy to AWS\")"; exit 3; }
	@$(MAKE) --no-print-directory sam-build SAMCONFIG=$(SAMCONFIG)
	@saved=$$($(SAMCONFIG_GET) region) || exit 2; \
	if [ -n "$(GUIDED)" ] || [ -z "$$saved" ]; then \
		echo "deploy: sam deploy --guided (no region saved in $(SAMCONFIG) yet, or GUIDED=1): it saves your answers there"; \
		sam deploy --guided --config-file $(abspath $(SAMCONFIG)) $(if $(REGION),--region $(REGION)) $(if $(PROFILE),--profile $(PROFILE)); \
	else \
		echo "deploy: sam deploy to $(or $(REGION),$$saved) with the settings saved in $(SAMCONFIG) (GUIDED=1 to change them)"; \
		sam deploy --config-file $(abspath $(SAMCONFIG)) $(if $(REGION),--region $(REGION)) $(if $(PROFILE),--profile $(PROFILE)); \
	fi

# Builds the worker image again in the stack's CodeBuild project, e.g. after a change to container/ without a deploy
# (README.md, "Deploy to AWS"). The stack and its region come from STACK= / REGION=, else from SAMCONFIG (what
# `make deploy` saved), else the region from AWS_REGION / AWS_DEFAULT_REGION / the AWS CLI's config.
# The image is tagged WorkerImageTag (the project's IMAGE_TAG) and src-<hash of the build context>, the tag the
# deploy's WorkerImage resource looks for before it builds.
worker-image:
	@mkdir -p dist
	@export AWS_PAGER=""; \
	stack="$(STACK)"; [ -n "$$stack" ] || stack=$$($(SAMCONFIG_GET) stack_name); \
	region="$(REGION)"; [ -n "$$region" ] || region=$$($(SAMCONFIG_GET) region); \
	[ -n "$$region" ] || region="$${AWS_REGION:-$$AWS_DEFAULT_REGION}"; \
	[ -n "$$region" ] || region=$$(aws configure get region $(if $(PROFILE),--profile $(PROFILE)) 2>/dev/null); \
	[ -n "$$stack" ] || { echo "worker-image: no stack: give STACK=<stack> or deploy with make deploy first"; exit 2; }; \
	[ -n "$$region" ] || { echo "worker-image: no region: give REGION=<region>, deploy with make deploy (it saves the region in $(SAMCONFIG)) or set one in your AWS config"; exit 2; }; \
	echo "worker-image: stack $$stack in $$region"; \
	AWS="aws --region $$region $(if $(PROFILE),--profile $(PROFILE))"; \
	out() { $$AWS cloudformation describe-stacks --stack-name $$stack --query "Stacks[0].Outputs[?OutputKey=='$$1'].OutputValue" --output text; }; \
	digest=$$($(PYTHON) scripts/worker_context.py dist/worker-context.zip) && \
	bucket=$$(out BucketName) && project=$$(out WorkerImageProjectName) && \
	$$AWS s3 cp dist/worker-context.zip s3://$$bucket/build/worker-context.zip && \
	build=$$($$AWS codebuild start-build --project-name $$project --environment-variables-override name=SOURCE_TAG,value=src-$$(echo $$digest | cut -c1-12) --query build.id --output text) && \
	echo "building $$build (logs: the stack's LogGroupName, stream worker-image)" && \
	while status=$$($$AWS codebuild batch-get-builds --ids $$build --query 'builds[0].buildStatus' --output text); [ "$$status" = IN_PROGRESS ]; do sleep $(or $(POLL_SECONDS),20); done; \
	echo "$$status"; [ "$$status" = SUCCEEDED ]

# Builds container/Dockerfile on this machine with podman and checks the image: `render-worker --help` and one
# Cycles frame inside it (scripts/worker_image_local.sh says how, and its settings for sandboxes).
worker-image-local:
	scripts/worker_image_local.sh

clean:
	rm -rf $(VENV) dist out build .pytest_cache .aws-sam
