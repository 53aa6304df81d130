# Levee — one command to run, one to test. `make help` lists the targets.
GO       ?= go
BIN      ?= bin/levee
RUNFLAGS ?=
BENCH_COUNT ?= 3

.PHONY: help build run test lint fmt vet bench fuzz clean
.PHONY: cluster cluster-down test-cluster surge surge-split

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

build: ## build bin/levee
	$(GO) build -o $(BIN) ./cmd/levee

run: build ## run Levee on its embedded defaults (SMTP 127.0.0.1:2525, HTTP 127.0.0.1:8025, data in ./levee-data)
	./$(BIN) serve $(RUNFLAGS)

test: lint ## vet and format checks, then every test with the race detector (and the deploy/ manifests' checks)
	$(GO) test -race -count=1 -timeout 20m ./...
	cd deploy && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 10m ./...

lint: vet ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

bench: ## benchmarks: the whole pipeline as a process and the receiver alone (accept rate, CPU a message, RSS), SMTP accept rate (sync and group commit on/off), drain rate, reader p99 during a drain, store writes, the folder list, a page view while writes commit, reading DATA
	$(GO) test -run '^$$' -bench '^Benchmark(Pipeline|Receiver)$$' -benchtime 5000x -count $(BENCH_COUNT) ./cmd/levee/
	$(GO) test -run '^$$' -bench '^Benchmark(SMTPAccept|Drain)$$' -benchtime 20000x -count $(BENCH_COUNT) ./app/
	$(GO) test -run '^$$' -bench ReaderDuringDrain -benchtime 1x -count $(BENCH_COUNT) ./app/
	$(GO) test -run '^$$' -bench 'Deliver|Mailboxes' -benchtime 2s -count $(BENCH_COUNT) ./store/...
	$(GO) test -run '^$$' -bench PageView -benchtime 500x -count $(BENCH_COUNT) ./store/sqlite/
	$(GO) test -run '^$$' -bench DataBody -count $(BENCH_COUNT) ./ingest/
	$(GO) test -run '^$$' -bench MailboxesJSON -count $(BENCH_COUNT) ./web/
	$(GO) test -run '^$$' -bench Publish -benchtime 2s -count $(BENCH_COUNT) ./queue/

surge: ## replay the Cyber Monday recipe (docs/loadtesting.md) at a fresh levee serve, about 4 minutes: report in levee-surge/cm.html
	GO=$(GO) deploy/local/surge.sh serve

surge-split: ## the same against levee smtpd, worker and web as separate processes on their own nats-server (pinned with taskset)
	GO=$(GO) deploy/local/surge.sh split

fuzz: ## run the SMTP session fuzzer for a minute
	$(GO) test -run '^$$' -fuzz FuzzSession -fuzztime 60s ./ingest/

clean: ## remove build outputs (not ./levee-data)
	rm -rf bin

cluster: ## start a local production-like cluster: 3 nats-server (JetStream, R3), 2 smtpd, 2 worker, 1 web, PostgreSQL (deploy/local)
	GO=$(GO) deploy/local/up.sh

cluster-down: ## stop the local cluster gracefully (Levee first, then NATS); data and logs stay in ./levee-cluster
	deploy/local/down.sh

test-cluster: ## kill the JetStream stream leader under load on a real 3-node cluster: nothing lost, nothing stored twice
	@# -run matching nothing would pass silently: require the leader-kill test's PASS line.
	@out=$$(LEVEE_TEST_CLUSTER=1 LEVEE_TEST_POSTGRES_REQUIRED=1 $(GO) test -count=1 -timeout 10m -v -run '^TestLocalCluster' ./cmd/levee/ 2>&1); \
	  status=$$?; echo "$$out"; [ $$status -eq 0 ] || exit $$status; \
	  echo "$$out" | grep -q -- '--- PASS: TestLocalClusterLeaderKill' || { echo "test-cluster: TestLocalClusterLeaderKill did not run"; exit 1; }
