# secretfs — `make test` is the one command CI runs (see .ci/run).
GO        ?= go
BIN       := $(CURDIR)/bin
KUMO_BIN  := $(BIN)/kumo
VAULT_BIN := $(BIN)/vault-dev
MNT       ?= $(CURDIR)/mnt
UNIT_PKGS := $(shell $(GO) list ./... | grep -v /integration)

PREFIX    ?= /usr/local
DESTDIR   ?=
SBINDIR   ?= /sbin
UNITDIR   ?= $(PREFIX)/lib/systemd/system

.PHONY: build run test test-unit test-integration backends fuse-tools lint bench fuzz clean install

build:
	$(GO) build -o $(BIN)/secretfs ./cmd/secretfs

# Mount with the env provider into ./mnt in the foreground; Ctrl-C unmounts.
run: build
	mkdir -p $(MNT)
	$(BIN)/secretfs mount $(MNT)

# Everything: format and vet, unit tests with -race, then the end-to-end
# suite (real FUSE mounts, the kumo AWS emulator, a Vault dev server).
test: lint test-unit test-integration

test-unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

# Tests that mount as another user need fusermount3 (Debian's fuse3); the
# test that uses it opens /dev/fuse to that user and puts its mode back.
fuse-tools:
	@command -v fusermount3 >/dev/null 2>&1 || \
		{ apt-get install -y -qq fuse3 >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq fuse3 >/dev/null 2>&1; }; } || \
		echo "fuse3 could not be installed: the non-root mount test will skip"

test-integration: backends fuse-tools
	SECRETFS_KUMO_BIN=$(KUMO_BIN) SECRETFS_VAULT_BIN=$(VAULT_BIN) \
		$(GO) test -race -count=1 -timeout 40m ./integration/...

# The real backends the integration suite starts, each built in its own
# module so that none of their dependencies enter secretfs's go.mod. The
# first build on a machine is slow (minutes); later ones are cached.
backends: $(BIN)
	bash integration/backends/kumo/build.sh $(KUMO_BIN)
	bash integration/backends/vault/build.sh $(VAULT_BIN)

$(BIN):
	mkdir -p $(BIN)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags secretfs_testing ./...

# Benchmarks print figures; they assert nothing about speed.
bench: backends
	SECRETFS_KUMO_BIN=$(KUMO_BIN) SECRETFS_VAULT_BIN=$(VAULT_BIN) \
		$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./integration/...

# Fuzz the reference grammar and the CSI provider's parameters; new
# interesting inputs stay in the corpus.
fuzz:
	$(GO) test -run '^$$' -fuzz 'FuzzParse$$' -fuzztime 60s ./resolver
	cp $$($(GO) env GOCACHE)/fuzz/github.com/secretfs/secretfs/resolver/FuzzParse/* resolver/testdata/fuzz/FuzzParse/ 2>/dev/null || true
	$(GO) test -run '^$$' -fuzz FuzzParseMount -fuzztime 60s ./csi
	mkdir -p csi/testdata/fuzz/FuzzParseMount
	cp $$($(GO) env GOCACHE)/fuzz/github.com/secretfs/secretfs/csi/FuzzParseMount/* csi/testdata/fuzz/FuzzParseMount/ 2>/dev/null || true

# The binary, the mount(8) helper (fstab: type fuse.secretfs) and the
# systemd unit. PREFIX and DESTDIR as usual; the helper goes where mount(8)
# looks for helpers (/sbin).
install: build
	install -D -m 0755 $(BIN)/secretfs $(DESTDIR)$(PREFIX)/bin/secretfs
	install -d $(DESTDIR)$(SBINDIR)
	ln -sf $(PREFIX)/bin/secretfs $(DESTDIR)$(SBINDIR)/mount.fuse.secretfs
	install -D -m 0644 contrib/systemd/secretfs.service $(DESTDIR)$(UNITDIR)/secretfs.service
	sed -i 's|/usr/local/bin/secretfs|$(PREFIX)/bin/secretfs|g' $(DESTDIR)$(UNITDIR)/secretfs.service

clean:
	rm -rf $(BIN)
