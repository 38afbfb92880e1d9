# durable — common tasks. `make help` lists them.
GO        ?= go
BUF_VERSION          ?= v1.75.0
PROTOC_GEN_GO        ?= v1.36.12
PROTOC_GEN_GO_GRPC   ?= v1.6.2
GOBIN     ?= $(shell $(GO) env GOPATH)/bin

.PHONY: help build test test-short vet fmt proto proto-tools dev binaries certs images demo demo-down chaos chaos-short fuzz bench-check bench-baseline

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build bin/durable
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o bin/durable ./cmd/durable

# USERMOD is the test module outside the main package tree (its own go.mod):
# a user's binary importing the project as a user would.
USERMOD   := tests/usermod

test: ## run every test with the race detector, the user's-module tests too
	$(GO) test -race -count=1 -timeout 30m ./...
	cd $(USERMOD) && $(GO) test -race -count=1 ./...

test-short: ## run the quick tests only
	$(GO) test -short -count=1 ./...
	cd $(USERMOD) && $(GO) test -short -count=1 ./...

vet: ## go vet and gofmt check (the user's module included)
	$(GO) vet ./...
	cd $(USERMOD) && $(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

bench-check: ## run `durable bench all --short` and fail if a row's ratio to its etcd ceiling fell below half of bench/baseline-short.json's
	$(GO) run ./cmd/durable bench check --quiet --baseline bench/baseline-short.json

bench-baseline: ## record bench/baseline-short.json from a run of `durable bench all --short` (on a quiet machine)
	$(GO) run ./cmd/durable bench check --quiet --write-baseline --baseline bench/baseline-short.json --commit $$(git rev-parse --short HEAD)

FUZZTIME ?= 30s

fuzz: ## run every fuzz target for FUZZTIME each (default 30s) with scripts/fuzz.sh
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

dev: ## run a development cluster (embedded etcd, example classes, sink)
	$(GO) run ./cmd/durable dev

proto-tools: ## install the protobuf generators at pinned versions
	$(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC)

proto: proto-tools ## regenerate proto/durable/v1/*.pb.go and the examples' (protoc-gen-durable from this tree)
	PATH="$(GOBIN):$$PATH" buf lint
	PATH="$(GOBIN):$$PATH" buf generate
	PATH="$(GOBIN):$$PATH" buf generate --template buf.gen.examples.yaml

binaries: ## build static bin/durable and bin/etcd (from the etcd server module) for the images
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -trimpath -o bin/durable ./cmd/durable
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/etcd go.etcd.io/etcd/server/v3

DEMO_NODES ?= dc1-n1,dc1-n2,dc1-n3,dc2-n1,dc2-n2

certs: binaries ## the compose demo's throw-away CA, certificates (nodes, clients, etcd's server and peers, the sink), tokens and etcd passwords in deploy/certs (kept if present; missing ones added)
	bin/durable certs --dir deploy/certs --nodes $(DEMO_NODES) --etcd --etcd-hosts etcd1,etcd2,etcd3 --sink --sink-hosts sink --readable

images: binaries certs ## build the durable:dev and durable-etcd:dev images (FROM scratch, nothing pulled) and the demo's certificates
	docker build -q -f deploy/durable.Dockerfile -t durable:dev .
	docker build -q -f deploy/etcd.Dockerfile -t durable-etcd:dev .

demo: images ## build the images and start the docker-compose demo
	docker-compose up -d
	docker-compose ps

demo-down: ## stop the demo and delete its volumes
	docker-compose down -v

CHAOS_DURATION ?= 5m
CHAOS_SEED     ?=
CHAOS_FAULTS   ?=

chaos: ## long chaos run (CHAOS_DURATION=5m, CHAOS_SEED, CHAOS_FAULTS=kill-node,...): processes, then containers; prints the report
	DURABLE_CHAOS_DURATION=$(CHAOS_DURATION) DURABLE_CHAOS_SEED=$(CHAOS_SEED) DURABLE_CHAOS_FAULTS=$(CHAOS_FAULTS) \
		$(GO) test -count=1 -v -timeout 3h -run 'TestChaos' ./chaos

chaos-short: ## the short chaos profile (40 s of faults per target), as `make test` and CI run it
	$(MAKE) chaos CHAOS_DURATION=40s
