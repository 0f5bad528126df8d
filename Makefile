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

.PHONY: all build test unit integration deb-test lint vet fmt demo demo-bgp lab-up lab-down fuzz fuzz-short fuzz-run soak-conns clean deb chaos bench bench-proxy bench-failover bench-soak bench-bgp

all: build

# One version for the binary (halb version, --version, the gossiped state)
# and the .deb: deploy/version.sh turns `git describe` into 0.2.0 on the tag,
# 0.2.0+3.g1a2b3c4 after it. VERSION=1.2.3 picks one. A plain `go build`
# falls back to the module version Go records from git.
VERSION ?= $(shell deploy/version.sh)
LDFLAGS := -X halb/internal/version.stamped=$(VERSION) \
	-X halb/internal/version.stampedCommit=$(shell git describe --always --abbrev=12 --dirty --exclude '*' 2>/dev/null)

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/halb ./cmd/halb
	$(GO) build -o $(BIN)/halb-lab ./test/cmd/halb-lab

## test: every test — unit and loopback (with -race), short fuzz runs, the namespace lab and the
## .deb installed in a clean Debian 12 (both root)
test: unit fuzz-short integration deb-test

unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	# The stats dashboard in headless Chromium (Debian's chromium); it skips
	# without a browser unless HALB_REQUIRE_BROWSER=1, as in CI.
	$(GO) test -count=1 -tags browser -run Browser ./internal/stats/

integration: build
	HALB_BIN=$(abspath $(BIN)/halb) HALB_LAB_BIN=$(abspath $(BIN)/halb-lab) \
		$(GO) test -tags integration -count=1 -timeout 20m -v ./integration/... 2>&1 | tee $(BIN)/integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|outage|halb_test|^ +[a-z_]+_test\.go:[0-9]+:' | cut -c1-400 ; \
		rc=$${PIPESTATUS[0]}; [ $$rc -eq 0 ] || awk -f .ci/failed-tests.awk $(BIN)/integration.log $(BIN)/integration.log; exit $$rc

lint: $(GOLANGCI)
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GOLANGCI) run ./...
	$(GOLANGCI) run --build-tags integration ./integration/...
	$(GOLANGCI) run --build-tags soak ./test/soak/...
	$(GOLANGCI) run --build-tags browser ./internal/stats/...

$(GOLANGCI):
	$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_V)

## demo: the whole job of halb in a namespace lab (root): two LBs, three control planes, a client
demo: build
	$(BIN)/halb-lab demo --halb $(abspath $(BIN)/halb)

## demo-bgp: three LB nodes announcing one VIP by BGP to an FRR router (root): ECMP, a maintenance
## withdrawal, a kill -9, with measured figures. DEMO_ROUTER=plain: FRR's hash-threshold ECMP as it comes
DEMO_ROUTER ?= pinned
demo-bgp: build
	@test -x /usr/lib/frr/bgpd || apt-get install -y frr
	@command -v nft >/dev/null || apt-get install -y nftables
	$(BIN)/halb-lab demo-bgp --halb $(abspath $(BIN)/halb) --router $(DEMO_ROUTER)

## lab-up / lab-down: the same lab, left running to poke at with `ip netns exec`
lab-up: build
	$(BIN)/halb-lab up --halb $(abspath $(BIN)/halb) --workdir /tmp/halb-lab

lab-down:
	$(BIN)/halb-lab down --workdir /tmp/halb-lab

## chaos: random faults in the namespace lab under client traffic, invariants checked after each (root;
## not part of `make test`). CHAOS_FAULTS (default 1000), CHAOS_SEED, CHAOS_DURATION; report in bin/chaos/
chaos: build
	@command -v tc >/dev/null || apt-get install -y iproute2
	@command -v nft >/dev/null || apt-get install -y nftables
	mkdir -p $(BIN)/chaos
	$(BIN)/halb-lab chaos --halb $(abspath $(BIN)/halb) --out $(BIN)/chaos/$$(date -u +%Y%m%dT%H%M%SZ).json


## fuzz: every fuzz target for FUZZTIME each (default 60s); fuzz-short: 5s each, part of `make test`
# A crash writes its input under the package's testdata/fuzz/<target>/:
# commit it and it runs as a regression test in every `go test`.
FUZZTIME       ?= 60s
FUZZTIME_SHORT ?= 5s
FUZZ_TARGETS   := internal/config:FuzzParse internal/cluster:FuzzDecodeState internal/cluster:FuzzDecodeBeat \
	internal/haproxy:FuzzImport internal/haproxy:FuzzParseKeepalived internal/admin:FuzzAdminAPI
fuzz:
	@$(MAKE) --no-print-directory fuzz-run FUZZ_FOR=$(FUZZTIME)
fuzz-short:
	@$(MAKE) --no-print-directory fuzz-run FUZZ_FOR=$(FUZZTIME_SHORT)
# go test -fuzz takes one target per package and run. Go 1.26's fuzz
# coordinator can fail a run with a bare "context deadline exceeded" when
# -fuzztime ends on a loaded machine (go.dev/issue/75804); without a
# written failing input that is not a finding, so it only warns.
fuzz-run:
	@fail=0; for t in $(FUZZ_TARGETS); do \
		pkg=./$${t%%:*}; name=$${t##*:}; \
		out=$$($(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZ_FOR) $$pkg 2>&1); rc=$$?; \
		if [ $$rc -eq 0 ]; then echo "ok   $$name ($$pkg, $(FUZZ_FOR))"; \
		elif ! grep -q 'Failing input written' <<<"$$out" && grep -q 'context deadline exceeded' <<<"$$out"; then \
			echo "ok   $$name ($$pkg, $(FUZZ_FOR)) — ended by the Go fuzz coordinator's deadline race, no failing input"; \
		else echo "$$out"; echo "FAIL $$name ($$pkg)"; fail=1; fi; \
	done; exit $$fail

## soak-conns: SOAK_CONNS (6000) proxied connections through bin/halb on 127.0.0.x for
## SOAK_DURATION (10m); fails if RSS, open files or goroutines grow after warm-up
SOAK_DURATION ?= 10m
SOAK_CONNS    ?= 6000
soak-conns: build
	HALB_BIN=$(abspath $(BIN)/halb) SOAK_DURATION=$(SOAK_DURATION) SOAK_CONNS=$(SOAK_CONNS) SOAK_OUT=$(abspath $(BIN)/soak-conns.json) \
		$(GO) test -tags soak -count=1 -timeout 3h -run TestSoakConns -v ./test/soak/

## bench: halb beside HAProxy, keepalived and the direct path in a namespace lab (root);
## never part of `make test`. Results: bench/results/<date>.json and <date>-<part>.md.
##   make bench BENCH_QUICK=1           a short run of every part
##   make bench-proxy                   one part (or bench-failover)
##   make bench-proxy BENCH_ONLY=rr,idle  some measurements of the proxy part (bulk, churn, rr, idle)
BENCH_QUICK ?=
BENCH_ONLY  ?=
bench: bench-proxy bench-failover bench-bgp

bench-proxy: build
	command -v haproxy >/dev/null || apt-get install -y haproxy
	$(GO) build -o $(BIN)/halb-bench ./test/cmd/halb-bench
	$(BIN)/halb-bench proxy --halb $(abspath $(BIN)/halb) --halb-lab $(abspath $(BIN)/halb-lab) \
		$(if $(BENCH_QUICK),--quick) $(if $(BENCH_ONLY),--only $(BENCH_ONLY))

## deb: bin/halb_<version>_amd64.deb and _arm64.deb (nfpm, built from the module proxy), with man pages,
## shell completions and docs; VERSION=1.2.3 picks the version, DEB_ARCHES=amd64 one architecture
NFPM_V     ?= v2.45.2
DEB_ARCHES ?= amd64 arm64
deb:
	rm -rf $(BIN)/deb && mkdir -p $(BIN)/deb
	# Man pages and completions come from the command tree, built for this machine.
	$(GO) run -ldflags '$(LDFLAGS)' ./cmd/halb-docs --man $(BIN)/deb/man --completions $(BIN)/deb/completions
	gzip -9n $(BIN)/deb/man/*.1
	GOBIN=$(abspath $(BIN)/deb) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_V)
	set -e; for arch in $(DEB_ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(BIN)/deb/halb ./cmd/halb; \
		VERSION='$(VERSION)' DEB_ARCH=$$arch \
			$(BIN)/deb/nfpm pkg --packager deb --config deploy/nfpm.yaml --target $(BIN)/; \
	done

## deb-test: the .deb for this machine installed in a clean Debian 12 root (mmdebstrap minbase from
## deb.debian.org, kept in bin/debian12-rootfs.tar): deploy/test-deb.sh there, and the unit's
## ExecReload failing on a broken config (integration TestDebInstall; root, else skipped)
DEB_ROOTFS ?= $(BIN)/debian12-rootfs.tar
deb-test:
	@if [ "$$(id -u)" != 0 ]; then \
		if [ "$(HALB_REQUIRE_NETNS)" = 1 ]; then echo "deb-test: needs root (chroot, mounts, a network namespace)"; exit 1; fi; \
		echo "skip deb-test: needs root"; exit 0; \
	fi; \
	set -e; rm -f $(BIN)/halb_*.deb; \
	arch=$$(dpkg --print-architecture); \
	$(MAKE) --no-print-directory deb DEB_ARCHES=$$arch >$(BIN)/deb-test-build.log 2>&1 || { cat $(BIN)/deb-test-build.log; exit 1; }; \
	$(MAKE) --no-print-directory $(DEB_ROOTFS); \
	HALB_DEB=$$(ls $(abspath $(BIN))/halb_*_$$arch.deb) HALB_DEB_ROOTFS=$(abspath $(DEB_ROOTFS)) \
		$(GO) test -tags integration -count=1 -timeout 10m -run '^TestDebInstall$$' -v ./integration/

# A minimal Debian 12 with what an operator's host has for reading the
# docs: man-db and bash-completion. Built once (about 2 minutes); `make
# clean` removes it.
$(DEB_ROOTFS):
	@command -v mmdebstrap >/dev/null || apt-get install -y --no-install-recommends mmdebstrap
	mkdir -p $(dir $@)
	mmdebstrap --quiet --variant=minbase --include=man-db,bash-completion --format=tar \
		bookworm $@.tmp http://deb.debian.org/debian
	mv $@.tmp $@

## bench-failover: failover outage of halb (profiles lan, fast) against keepalived + HAProxy,
## then the false-failover soak (root; about an hour on 2 busy vCPUs, BENCH_QUICK=1 about 15 min). Results:
## bench/results/<date>.json (parts failover, soak), a table, bench/results/<date>-failover.md.
## One part: BENCH_SCENARIOS=kill,planned (kill linkdown backends planned failback baseline
## longlived-{kill,linkdown,stop,drill} longlived-echo-{kill,linkdown,stop,drill} soak), BENCH_SYSTEMS=halb-fast (halb-lan halb-fast
## halb-lan-notickle halb-lan-nohandoff keepalived-default keepalived-tuned).
BENCH_SCENARIOS ?=
BENCH_SYSTEMS   ?=
bench-failover: build
	apt-get install -y haproxy keepalived stress-ng >/dev/null
	$(GO) build -o $(BIN)/halb-bench-failover ./test/cmd/halb-bench-failover
	$(BIN)/halb-bench-failover run --results bench/results \
		$(if $(filter-out 0,$(BENCH_QUICK)),--quick) \
		$(if $(BENCH_SCENARIOS),--scenarios $(BENCH_SCENARIOS)) \
		$(if $(BENCH_SYSTEMS),--systems $(BENCH_SYSTEMS))

## bench-soak: only the false-failover soak (10 min idle + 10 min under stress; BENCH_QUICK=1: 1 + 1)
bench-soak:
	$(MAKE) bench-failover BENCH_SCENARIOS=soak

## bench-bgp: one LB node leaves an ECMP set of three behind FRR (withdraw, crash, link down), beside ARP
## mode: new-connection outage and the share of established connections that live (root). Results:
## bench/results/<date>.json (part bgp) and <date>-bgp.md. BENCH_QUICK=1: 2 repetitions instead of 5.
bench-bgp: build
	@test -x /usr/lib/frr/bgpd || apt-get install -y frr
	@command -v nft >/dev/null || apt-get install -y nftables
	$(GO) build -o $(BIN)/halb-bench-failover ./test/cmd/halb-bench-failover
	$(BIN)/halb-bench-failover bgp --results bench/results $(if $(filter-out 0,$(BENCH_QUICK)),--quick)

clean:
	rm -rf $(BIN)
