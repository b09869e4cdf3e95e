# Ordo build and test targets. "make test" is what CI runs (.ci/run).

GO      ?= go
VERSION ?= 0.1.0-dev
GIT_SHA ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) $(if $(GIT_SHA),-X main.gitSHA=$(GIT_SHA))

.PHONY: all build test test-race test-faults-long fuzz difftest vet fmt clean

all: build

## build: compile bin/ordo
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ordo ./cmd/ordo

# CORE are the packages whose unit tests also run under the race detector in "make test".
CORE := ./internal/mvcc/ ./internal/storage/ ./internal/raftnode/ ./internal/transport/ ./internal/watch/ ./internal/apply/

## test: vet, run every test (short fault runs included), the core packages' tests again under
## the race detector, every fuzz target briefly, and a short differential run against etcd
test:
	$(GO) vet ./...
	$(GO) test -timeout 15m ./...
	$(GO) test -race -timeout 10m $(CORE)
	FUZZTIME=$(FUZZTIME_CI) scripts/fuzz-brief.sh
	DIFFTEST_OPTIONAL=1 scripts/difftest.sh smoke

# FUZZTIME_CI is how long "make test" runs each fuzz target; FUZZTIME is for "make fuzz".
FUZZTIME_CI ?= 2s
FUZZTIME    ?= 1m

## test-faults-long: the fault-injection suite for minutes (3 and 5 members, every fault)
test-faults-long:
	ORDO_LONG_TESTS=1 $(GO) test -count=1 -v -timeout 60m ./test/fault/

## fuzz: every fuzz target for FUZZTIME each
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz-brief.sh

## difftest: random request sequences against Ordo and etcd v3.7, responses compared
difftest:
	scripts/difftest.sh

## test-race: run every test under the race detector (needs cgo)
test-race:
	$(GO) test -race -timeout 30m ./...

## vet: go vet every package
vet:
	$(GO) vet ./...

## fmt: list files gofmt would change (fails if any)
fmt:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin
