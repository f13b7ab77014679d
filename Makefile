# Two commands for a newcomer: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
# The IaC linters (checkov, aws-sam-translator, cfn-lint, statelint) pin boto3/pydantic versions that conflict
# with requirements.txt, so they live in a venv of their own.
LINT_VENV := $(VENV)/lint
LINT_STAMP := $(LINT_VENV)/.installed-$(shell sha1sum requirements-lint.txt | cut -c1-12)

.PHONY: setup runtimes demo test lint typecheck lint-iac format bench addon sam-build worker-image clean

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

# The Lambda packages as `sam deploy` uploads them: `sam build` when the SAM CLI is installed, else the same two
# makefile targets it would run (contract/Makefile, lambda/frame_counter/Makefile) into .aws-sam/build/<LogicalId>,
# so the package is built and import-checked anyway. Neither way needs python3.12 or Docker.
SAM_BUILD := .aws-sam/build
sam-build: $(STAMP)
	@if command -v sam >/dev/null 2>&1; then \
		echo "sam-build: running sam build ($$(sam --version))"; \
		sam build; \
	else \
		echo "sam-build: no sam command; running the makefile targets sam build would run, into $(SAM_BUILD)/"; \
		rm -rf $(SAM_BUILD)/ContractLayer $(SAM_BUILD)/FrameCounterFunction && \
		$(MAKE) --no-print-directory -C contract build-ContractLayer ARTIFACTS_DIR=$(abspath $(SAM_BUILD))/ContractLayer && \
		$(MAKE) --no-print-directory -C lambda/frame_counter build-FrameCounterFunction \
			ARTIFACTS_DIR=$(abspath $(SAM_BUILD))/FrameCounterFunction PYTHON=$(abspath $(PY)); \
	fi
	@test ! -e $(SAM_BUILD)/FrameCounterFunction/render_on_aws || { echo "sam-build: the add-on leaked in"; exit 1; }
	@test ! -e $(SAM_BUILD)/FrameCounterFunction/bpy || { echo "sam-build: bpy leaked in"; exit 1; }
	@ls $(SAM_BUILD)/FrameCounterFunction/zstandard/*.cpython-312-*.so >/dev/null \
		|| { echo "sam-build: zstandard is not the Lambda's cp312 build"; exit 1; }
	@$(PY) -I -c "import sys; sys.path.insert(0, '$(SAM_BUILD)/ContractLayer/python'); \
		import render_contract; print('sam-build: layer OK,', render_contract.__file__)"
	@du -sh $(SAM_BUILD)/FrameCounterFunction $(SAM_BUILD)/ContractLayer

# Builds the worker image in the stack's CodeBuild project (README.md, "Deploy to AWS"): make worker-image STACK=name
worker-image:
	@test -n "$(STACK)" || { echo "usage: make worker-image STACK=<stack> [REGION=<region>] [PROFILE=<profile>]"; exit 2; }
	mkdir -p dist
	git archive --format=zip --output dist/worker-context.zip HEAD container contract pyproject.toml
	export AWS_PAGER=""; AWS="aws $(if $(REGION),--region $(REGION)) $(if $(PROFILE),--profile $(PROFILE))"; \
	out() { $$AWS cloudformation describe-stacks --stack-name $(STACK) --query "Stacks[0].Outputs[?OutputKey=='$$1'].OutputValue" --output text; }; \
	bucket=$$(out BucketName) && project=$$(out WorkerImageProjectName) && \
	$$AWS s3 cp dist/worker-context.zip s3://$$bucket/build/worker-context.zip && \
	build=$$($$AWS codebuild start-build --project-name $$project --environment-variables-override name=SOURCE_TAG,value=git-$$(git rev-parse --short HEAD) --query build.id --output text) && \
	echo "building $$build (logs: the stack's LogGroupName, stream worker-image)" && \
	while status=$$($$AWS codebuild batch-get-builds --ids $$build --query 'builds[0].buildStatus' --output text); [ "$$status" = IN_PROGRESS ]; do sleep 20; done; \
	echo "$$status"; [ "$$status" = SUCCEEDED ]

clean:
	rm -rf $(VENV) dist out build .pytest_cache .aws-sam
