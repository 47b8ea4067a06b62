# steward: the README's two commands are `make demo` and `make test`.

GO        ?= go
BIN       := bin/steward
EXAMPLES  := examples/steward.hcl

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

# Stops the example fleet's merchants (each by the process steward
# recorded for it, never by pattern), backs up and drops their databases,
# and forgets the state, so that the next make demo starts clean. The
# database backups move to examples/.backups, which it keeps.
demo-clean: build
	$(BIN) destroy -config $(EXAMPLES) -auto-approve -drop-databases
	@if [ -d examples/.steward/state/backups ]; then \
		mkdir -p examples/.backups && cp -a examples/.steward/state/backups/. examples/.backups/ && \
		echo "The database backups listed above are moved to examples/.backups (examples/.steward is removed next)."; fi
	rm -rf examples/.steward

test:
	$(GO) test ./...

# The packages whose goroutines share state, under the race detector.
race:
	$(GO) test -race ./reconcile ./engine ./state/... ./api/... ./router ./probe

# Every fuzz target runs a number of inputs, not a time: a time limit can
# end a target in the middle of an input on a busy machine and fail the
# run. FUZZN scales them all (make fuzz FUZZN=10 runs ten times as many).
FUZZN ?= 1
fuzz:
	@set -e; for t in \
		spec:FuzzLoad:3000 spec:FuzzLoadHost:3000 spec:FuzzCompareVersions:20000 \
		pkgstore:FuzzUnpack:2000 pkgstore:FuzzParseManifest:3000 pkgstore:FuzzParseSums:5000 \
		state:FuzzLoad:1000 state:FuzzEvents:2000 probe:FuzzProbeAnswer:20000 runtime:FuzzParseStat:20000 \
		api:FuzzDecodeApplyRequest:20000 api:FuzzDecodeStrict:20000 api:FuzzVerifySignature:20000 \
		router:FuzzRenderStructure:2000 internal/dsn:FuzzRedact:20000; do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; n=$${rest#*:}; \
		echo "fuzz $$pkg $$name $$((n * $(FUZZN)))x"; \
		$(GO) test ./$$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $$((n * $(FUZZN)))x; \
	done

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./cmd/steward ./state ./runtime

ci: fmt-check vet test race fuzz
