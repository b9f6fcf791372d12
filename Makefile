# kiln's two commands: `make demo` bakes the example recipe on this machine
# against a local AWS emulator; `make test` runs every test. Both install
# what they need first (Go modules, Node tools, a Python venv with moto and
# cfn-lint, OpenSSH server).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
# Everything kiln installs for itself lives in the project: the moto venv
# under .kiln/venv, Node tools under node_modules.
export KILN_HOME ?= $(CURDIR)/.kiln
VENV := $(KILN_HOME)/venv
MOTO_VERSION := 5.2.5
CFN_LINT_VERSION := 1.58.0
FUZZTIME ?= 10s
STAMP := $(KILN_HOME)/stamps

.PHONY: all deps test demo bench vet fuzz build lambdas clean

# The Lambda zips the stack deploys (cdk synth builds them too).
lambdas:
	cd infra && $(GO) run ./cmd/kiln-lambdas -src .. -o ../dist/lambdas

all: build

deps: $(STAMP)/go $(STAMP)/npm $(STAMP)/py $(STAMP)/apt

$(STAMP)/go: go.mod go.sum infra/go.mod infra/go.sum
	@mkdir -p $(STAMP)
	$(GO) mod download
	cd infra && $(GO) mod download
	@touch $@

$(STAMP)/npm: package.json package-lock.json
	@mkdir -p $(STAMP)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMP)/py:
	@mkdir -p $(STAMP)
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)' 'cfn-lint==$(CFN_LINT_VERSION)'
	@touch $@

# A real OpenSSH sshd is the provisioning target in tests and local bakes
# (inside a throwaway sandbox, never the host's own sshd); sudo lets the
# sandbox's login user act as on a cloud image.
$(STAMP)/apt:
	@mkdir -p $(STAMP)
	@missing=""; test -x /usr/sbin/sshd || missing="$$missing openssh-server"; command -v sudo >/dev/null || missing="$$missing sudo"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing$$missing"; \
			(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
			(service ssh stop 2>/dev/null || true); \
		else \
			echo "please install the Debian packages:$$missing (sudo apt-get install$$missing)"; exit 1; \
		fi; \
	fi
	@touch $@

build:
	$(GO) build -o bin/kiln ./cmd/kiln

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd infra && $(GO) vet ./...

# Every test the project has: unit tests, moto and sshd integration tests,
# the state machine checks (asl-validator, aws-local-stepfunctions), the CDK
# synth checks, and a short run of each fuzz target.
# The reliability checks' summaries (fault sweep, throttle storm, crash and
# retry, concurrency, secrets) are printed at the end.
test: deps vet
	@rm -f $(KILN_HOME)/reliability.txt
	CI=$${CI:-} KILN_REPORT=$(KILN_HOME)/reliability.txt $(GO) test -count=1 -timeout 25m ./...
	cd infra && CI=$${CI:-} $(GO) test -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory fuzz
	@echo; echo "reliability (pkg/local):"; \
	if [ -f $(KILN_HOME)/reliability.txt ]; then sed 's/^/  /' $(KILN_HOME)/reliability.txt; else echo "  not run here (see the skipped tests)"; fi

fuzz:
	$(GO) test ./pkg/bake/ -run '^$$' -fuzz '^FuzzLoadHCL$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/bake/ -run '^$$' -fuzz '^FuzzLoadLegacy$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/bake/ -run '^$$' -fuzz '^FuzzOpenBundle$$' -fuzztime $(FUZZTIME)

# The main job on the local default: a real bake of the example recipe,
# end to end, against a local AWS emulator and a throwaway sandbox.
demo: deps build
	./bin/kiln validate examples/webapp
	./bin/kiln bake --local examples/webapp

# The benchmarks of issue 8, in simulated AWS time: one- and five-Region
# bakes against the floor of AWS's own work, and 200 bakes against EC2's
# token buckets. Prints one table with each figure's change since the last
# run; every run's figures are kept under bench/results.
bench: deps
	@mkdir -p bench/results
	@$(GO) test -run '^$$' -bench '^BenchmarkBake' -benchtime 1x -count 1 -timeout 60m ./pkg/local/ > bench/raw.txt 2>&1 || { cat bench/raw.txt; exit 1; }
	@$(GO) run ./cmd/kiln-bench -results bench/results -last bench/last.json < bench/raw.txt

clean:
	rm -rf bin
