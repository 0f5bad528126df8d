# halb — see README.md. Every target works on a fresh clone; the ones that
# build network namespaces (demo, lab-up, integration tests) need root.

SHELL       := /bin/bash
GO          ?= go
BIN         ?= bin
GOLANGCI    ?= $(shell $(GO) env GOPATH)/bin/golangci-lint
GOLANGCI_V  ?= v2.15.0
# Tests that build network namespaces fail instead of skipping when this is 1.
HALB_REQUIRE_NETNS ?=
export HALB_REQUIRE_NETNS

.PHONY: all build test unit integration lint vet fmt demo lab-up lab-down fuzz clean deb bench bench-proxy

all: build

build:
	$(GO) build -o $(BIN)/halb ./cmd/halb
	$(GO) build -o $(BIN)/halb-lab ./cmd/halb-lab

## test: every test — unit and loopback (with -race), short fuzz runs, and the namespace lab (root)
test: unit integration

unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	# The stats dashboard in headless Chromium (Debian's chromium); it skips
	# without a browser unless HALB_REQUIRE_BROWSER=1, as in CI.
	$(GO) test -count=1 -tags browser -run Browser ./internal/stats/

integration: build
	HALB_BIN=$(abspath $(BIN)/halb) HALB_LAB_BIN=$(abspath $(BIN)/halb-lab) \
		$(GO) test -tags integration -count=1 -timeout 20m -v ./integration/... 2>&1 | tee $(BIN)/integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|outage|halb_test' ; \
		exit $${PIPESTATUS[0]}

lint: $(GOLANGCI)
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GOLANGCI) run ./...
	$(GOLANGCI) run --build-tags integration ./integration/...

$(GOLANGCI):
	$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_V)

## demo: the whole job of halb in a namespace lab (root): two LBs, three control planes, a client
demo: build
	$(BIN)/halb-lab demo --halb $(abspath $(BIN)/halb)

## lab-up / lab-down: the same lab, left running to poke at with `ip netns exec`
lab-up: build
	$(BIN)/halb-lab up --halb $(abspath $(BIN)/halb) --workdir /tmp/halb-lab

lab-down:
	$(BIN)/halb-lab down --workdir /tmp/halb-lab

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s ./internal/config/

## bench: halb beside HAProxy, keepalived and the direct path in a namespace lab (root);
## never part of `make test`. Results: bench/results/<date>.json and <date>-<part>.md.
##   make bench BENCH_QUICK=1           a short run of every part
##   make bench-proxy                   one part (or bench-failover)
##   make bench-proxy BENCH_ONLY=rr,idle  some measurements of the proxy part (bulk, churn, rr, idle)
BENCH_QUICK ?=
BENCH_ONLY  ?=
bench: bench-proxy bench-failover

bench-proxy: build
	command -v haproxy >/dev/null || apt-get install -y haproxy
	$(GO) build -o $(BIN)/halb-bench ./cmd/halb-bench
	$(BIN)/halb-bench proxy --halb $(abspath $(BIN)/halb) --halb-lab $(abspath $(BIN)/halb-lab) \
		$(if $(BENCH_QUICK),--quick) $(if $(BENCH_ONLY),--only $(BENCH_ONLY))

## deb: bin/halb_<version>_<arch>.deb (nfpm, fetched by `go run`); VERSION=1.2.3 to pick the version
NFPM_V  ?= v2.45.2
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//' | grep . || echo 0.1.0~git$$(git rev-parse --short HEAD 2>/dev/null || echo unknown))
deb:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=auto -o $(BIN)/halb ./cmd/halb
	VERSION='$(VERSION)' GOARCH=$$($(GO) env GOARCH) \
		$(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_V) pkg --packager deb --config deploy/nfpm.yaml --target $(BIN)/

clean:
	rm -rf $(BIN)
