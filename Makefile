# steward: the README's two commands are `make demo` and `make test`.

GO        ?= go
BIN       := bin/steward
EXAMPLES  := examples/steward.hcl
FUZZTIME  ?= 10s
# The state loader's target fsyncs on every input; a time limit can end it
# in the middle of one and fail the run, so it runs a number of inputs.
STATE_FUZZTIME ?= 5000x
# Each probe input is a loopback exchange; a count, like the state's, never
# ends the run in the middle of one.
PROBE_FUZZTIME ?= 20000x

.PHONY: all build packages demo demo-run demo-clean test race fuzz vet fmt-check bench ci

all: build

# steward and steward-logshim, the small program steward starts per merchant
# to write its logs; steward looks for it next to itself.
build:
	$(GO) build -o $(BIN) ./cmd/steward
	$(GO) build -o $(dir $(BIN))steward-logshim ./cmd/steward-logshim

packages:
	$(GO) run ./examples/pkgbuild -out examples/packages

# Builds steward and the example packages, then brings up the example fleet
# (embedded state under examples/.steward) and shows its status.
demo: build packages
	$(BIN) apply -config $(EXAMPLES) -auto-approve
	$(BIN) status -config $(EXAMPLES)

# Runs the daemon on the example fleet in the foreground (Ctrl-C stops the
# daemon; the merchants keep running).
demo-run: build packages
	$(BIN) run -config $(EXAMPLES)

# Stops the example fleet's processes and forgets its state.
demo-clean:
	-pkill -KILL -f "$(CURDIR)/example[s]/.steward/run/releases/" ; true
	rm -rf examples/.steward

test:
	$(GO) test ./...

# The packages whose goroutines share state, under the race detector.
race:
	$(GO) test -race ./reconcile ./engine ./state/... ./api/... ./router ./probe

fuzz:
	$(GO) test ./spec -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME)
	$(GO) test ./spec -run '^$$' -fuzz '^FuzzLoadHost$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkgstore -run '^$$' -fuzz '^FuzzUnpack$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkgstore -run '^$$' -fuzz '^FuzzParseManifest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./state -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(STATE_FUZZTIME)
	$(GO) test ./probe -run '^$$' -fuzz '^FuzzProbeAnswer$$' -fuzztime $(PROBE_FUZZTIME)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./cmd/steward ./state ./runtime

ci: fmt-check vet test race fuzz
