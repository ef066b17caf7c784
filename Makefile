# The workspace holds several modules; `./...` does not span them, so every
# target names the module directories.
# Modules with code to vet (tools only pins generators behind a build tag).
MODULES       := pkg services/proxy services/media deploy/check tests/e2e
TEST_PACKAGES := ./pkg/... ./services/proxy/... ./services/media/... ./tests/e2e/... ./deploy/check/...
BIN           := $(CURDIR)/bin

# The media node links libopus through cgo; nolibopusfile keeps the
# dependency to libopus-dev alone.
export GOFLAGS := -buildvcs=false -tags=nolibopusfile

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install missing system packages for building (root) or name them
	@scripts/ensure-deps.sh build

.PHONY: test-deps
test-deps:
	@scripts/ensure-deps.sh test

.PHONY: build
build: deps ## build both services into bin/
	cd services/proxy && CGO_ENABLED=0 go build -o $(BIN)/proxy ./cmd/proxy
	cd services/media && CGO_ENABLED=1 go build -o $(BIN)/media ./cmd/media

.PHONY: run
run: build ## run the local stack: embedded NATS, one proxy (SIP 127.0.0.1:5060), one media node
	@scripts/run-local.sh

.PHONY: test
test: test-deps lint proto-check ## the whole suite: lint, generated code, every test with -race
	go test -race -count=1 -timeout 12m $(TEST_PACKAGES)
	cd services/media && go test -race -count=1 -tags 'nolibopusfile udpio_portable' ./internal/udpio/ ./internal/engine/

.PHONY: bench
bench: deps ## benchmarks of the hot paths, with allocations
	go test -run '^$$' -bench . -benchmem -benchtime 2s ./pkg/... ./services/media/... ./services/proxy/...

.PHONY: bench-proxy
bench-proxy: ## call-rate sweep of the SIP proxy against Kamailio (sipp on 127.0.0.1, ~5 min; as root installs sip-tester and kamailio)
	@bench/proxy/run.sh

.PHONY: bench-media
bench-media: deps ## media node load: calls per core, added latency, allocations per packet (~3-4 min, loopback)
	@scripts/bench-media.sh $(BENCH_MEDIA_ARGS)

.PHONY: lint
lint: deps ## gofmt and go vet on every module; the proxy must build without cgo
	@out=$$(gofmt -l pkg services tools deploy tests); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && go vet ./...) || exit 1; done
	cd services/proxy && CGO_ENABLED=0 go build ./...
	cd services/media && GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 go vet ./internal/udpio/
	cd deploy/docker/healthcheck && GOWORK=off go vet ./main.go

IMAGE_TAG ?= dev

.PHONY: images
images: ## build the container images (needs a Docker engine)
	docker build -f services/proxy/Dockerfile --build-arg VERSION=$(IMAGE_TAG) -t callgrid/proxy:$(IMAGE_TAG) .
	docker build -f services/media/Dockerfile --build-arg VERSION=$(IMAGE_TAG) -t callgrid/media:$(IMAGE_TAG) .

$(BIN)/buf $(BIN)/protoc-gen-go: tools/go.mod tools/go.sum
	cd tools && go build -o $(BIN)/ github.com/bufbuild/buf/cmd/buf google.golang.org/protobuf/cmd/protoc-gen-go

.PHONY: proto
proto: $(BIN)/buf $(BIN)/protoc-gen-go ## lint the protos and regenerate pkg/gen
	PATH=$(BIN):$$PATH buf lint proto
	PATH=$(BIN):$$PATH buf generate

.PHONY: proto-check
proto-check: $(BIN)/buf $(BIN)/protoc-gen-go ## fail when pkg/gen is stale
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	PATH=$(BIN):$$PATH buf lint proto && \
	PATH=$(BIN):$$PATH buf generate --output $$tmp && \
	if ! diff -r $$tmp/pkg/gen pkg/gen; then echo "pkg/gen is stale: run make proto"; exit 1; fi
