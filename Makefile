# twinhub: `make run` starts the hub on embedded defaults; `make test` installs
# what the tests need and runs them.
GO      ?= go
DATA    ?= ./data
FUZZTIME ?= 30s

.PHONY: run test deps bench fuzz lint

# run keeps twin history in a local ClickHouse (data in $(DATA)/clickhouse)
# when clickhouse-server is installed (make deps), and says so when it is not.
run:
	$(GO) run ./cmd/twinhub run --data-dir $(DATA) --clickhouse-local auto

# deps installs the external programs the tests drive (Debian packages:
# mosquitto, clickhouse-server, prometheus, chromium, runc), helm (built from its Go
# module into bin/) and
# the pinned Azure IoT Node.js SDKs of the compatibility tests (npm, when
# node_modules is missing or older than the lock file).
AZURE_SDK := cmd/twinhub/testdata/azure-sdk
HELM_VERSION := v3.21.4
deps:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || \
		{ echo "installing mosquitto (Debian package)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
	@command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || \
		{ echo "installing clickhouse-server (Debian package; tests start their own server)"; apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null; }
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || \
		{ echo "installing prometheus (Debian package, with promtool; tests check the rules and scrape a hub)"; apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || \
		{ echo "installing chromium (Debian package; the explorer's browser tests drive it headless)"; apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v runc >/dev/null 2>&1 || ! command -v podman >/dev/null 2>&1 || \
		{ echo "installing runc (Debian package; podman runs the image tests with it where crun cannot)"; apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >/dev/null; }
	@$(GO) version -m bin/helm 2>/dev/null | grep -q "mod	helm.sh/helm/v3	$(HELM_VERSION)" || \
		{ echo "building helm $(HELM_VERSION) into bin/ (go install; the chart tests run it)"; GOBIN=$(CURDIR)/bin $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }
	@[ $(AZURE_SDK)/node_modules/.package-lock.json -nt $(AZURE_SDK)/package-lock.json ] || ! command -v npm >/dev/null 2>&1 || \
		{ echo "installing the Azure IoT SDKs (npm ci in $(AZURE_SDK))"; npm ci --prefix $(AZURE_SDK) --no-audit --no-fund --loglevel=error; }

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...

# bench: the Go micro-benchmarks, then about a minute of `twinhub bench`
# (1,000 simulated devices against an embedded hub, with the raw broker and
# JetStream baselines and their ratios).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1s ./...
	$(GO) run ./cmd/twinhub bench --devices 1000 --duration 30s --fanout 1000 --fanout-rate 500 --baseline

fuzz:
	$(GO) test ./pipeline/twin -run '^$$' -fuzz FuzzApply -fuzztime $(FUZZTIME)
	$(GO) test ./pipeline/twin -run '^$$' -fuzz FuzzParseJSON -fuzztime $(FUZZTIME)
	$(GO) test ./queries/lang -run '^$$' -fuzz FuzzQuery -fuzztime $(FUZZTIME)
	$(GO) test ./bridge/sas -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./bridge/sas -run '^$$' -fuzz FuzzCheckScope -fuzztime $(FUZZTIME)
	$(GO) test ./queries/projection -run '^$$' -fuzz FuzzFlatten -fuzztime $(FUZZTIME)
	$(GO) test ./bridge/mqttbridge -run '^$$' -fuzz FuzzDecide -fuzztime $(FUZZTIME)

# lint fails when vet or staticcheck complains, a file is not gofmt-clean,
# `go mod tidy` would change go.mod or go.sum (it prints the diff and
# changes nothing), deadcode finds a function nothing calls (tests
# included), or a function outside the tests is above cyclomatic
# complexity 30. The tools run at pinned versions from the module proxy.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEADCODE    := golang.org/x/tools/cmd/deadcode@v0.53.0
GOCYCLO     := github.com/fzipp/gocyclo/cmd/gocyclo@v0.6.0
lint:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit the result"; exit 1; }
	$(GO) run $(STATICCHECK) ./...
	@dead="$$($(GO) run $(DEADCODE) -test ./...)"; test -z "$$dead" || { echo "$$dead"; echo "dead code: remove it, or call it"; exit 1; }
	@$(GO) run $(GOCYCLO) -over 30 -ignore '_test\.go$$' . || { echo "functions above cyclomatic complexity 30: split them into named steps"; exit 1; }
