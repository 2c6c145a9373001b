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
MANDIR    ?= $(PREFIX)/share/man
DIST      := $(CURDIR)/dist

# Providers a binary carries: make build PROVIDERS="env vault". Each one
# left out is the build tag secretfs_no_NAME; exec providers are always in.
ALL_PROVIDERS := env aws vault gcp azure
PROVIDERS     ?= $(ALL_PROVIDERS)
comma := ,
empty :=
space := $(empty) $(empty)
TAGS    := $(subst $(space),$(comma),$(strip $(foreach p,$(ALL_PROVIDERS),$(if $(filter $(p),$(PROVIDERS)),,secretfs_no_$(p)))))
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  := $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X main.buildVersion=$(VERSION) -X main.buildCommit=$(COMMIT)
# Every tag set CI checks: each provider alone, and all of them.
TAG_SETS := secretfs_no_aws,secretfs_no_vault,secretfs_no_gcp,secretfs_no_azure secretfs_no_env,secretfs_no_vault,secretfs_no_gcp,secretfs_no_azure secretfs_no_env,secretfs_no_aws,secretfs_no_gcp,secretfs_no_azure secretfs_no_env,secretfs_no_aws,secretfs_no_vault,secretfs_no_azure secretfs_no_env,secretfs_no_aws,secretfs_no_vault,secretfs_no_gcp all

.PHONY: build run test test-unit test-providers test-integration backends fuse-tools docker-tools pg-tools inotify-tools lint bench fuzz clean install release release-check licenses check-providers

check-providers:
	@bad="$(filter-out $(ALL_PROVIDERS),$(PROVIDERS))"; if [ -n "$$bad" ]; then \
		echo "PROVIDERS: unknown $$bad (have: $(ALL_PROVIDERS))"; exit 2; fi; \
	if [ -z "$(strip $(PROVIDERS))" ]; then echo "PROVIDERS is empty: a binary with exec providers only"; fi

build: check-providers
	$(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/secretfs ./cmd/secretfs

# Mount with the env provider into ./mnt in the foreground; Ctrl-C unmounts.
run: build
	mkdir -p $(MNT)
	$(BIN)/secretfs mount $(MNT)

# Everything: format and vet, unit tests with -race, then the end-to-end
# suite (real FUSE mounts, the kumo AWS emulator, a Vault dev server).
test: lint test-unit test-providers test-integration release-check

test-unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

# Vet and unit-test every provider subset, so that none rots. Only
# cmd/secretfs changes with the tags; other packages' results are cached.
test-providers:
	@set -e; for t in $(TAG_SETS); do \
		[ "$$t" = all ] && t=; \
		echo "tags: $${t:-(all providers)}"; \
		$(GO) vet -tags "$$t" ./cmd/secretfs; \
		$(GO) test -tags "$$t" $(UNIT_PKGS); \
	done

# Tests that mount as another user need fusermount3 (Debian's fuse3); the
# test that uses it opens /dev/fuse to that user and puts its mode back.
fuse-tools:
	@command -v fusermount3 >/dev/null 2>&1 || \
		{ apt-get install -y -qq fuse3 >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq fuse3 >/dev/null 2>&1; }; } || \
		echo "fuse3 could not be installed: the non-root mount test will skip"

# The Docker volume tests start a private Docker Engine (Debian's
# docker.io): its own data root, exec root and mount namespace, stopped and
# removed by the test.
docker-tools:
	@command -v dockerd >/dev/null 2>&1 || \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null 2>&1; }; } || \
		echo "docker.io could not be installed: the Docker volume tests with a real engine will skip"

# inotifywait (Debian's inotify-tools) watches files in the file-event tests,
# as a program watching its secrets would.
inotify-tools:
	@command -v inotifywait >/dev/null 2>&1 || \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq inotify-tools >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq inotify-tools >/dev/null 2>&1; }; } || \
		echo "inotify-tools could not be installed: the inotifywait tests will skip"

# PostgreSQL 15 for the Vault database-engine tests: each test starts its own
# server (initdb, pg_ctl) as an unprivileged user in a temporary directory.
pg-tools:
	@test -x /usr/lib/postgresql/15/bin/initdb && command -v psql >/dev/null 2>&1 || \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1; }; } || \
		echo "postgresql could not be installed: the Vault database-engine test will skip"

test-integration: backends fuse-tools docker-tools pg-tools inotify-tools
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

# The binary, the mount(8) helper (fstab: type fuse.secretfs), the systemd
# unit, the manual page and the shell completions, all generated from the
# binary. PREFIX and DESTDIR as usual; the helper goes where mount(8)
# looks for helpers (/sbin).
install: build
	install -D -m 0755 $(BIN)/secretfs $(DESTDIR)$(PREFIX)/bin/secretfs
	install -d $(DESTDIR)$(SBINDIR)
	ln -sf $(PREFIX)/bin/secretfs $(DESTDIR)$(SBINDIR)/mount.fuse.secretfs
	install -D -m 0644 contrib/systemd/secretfs.service $(DESTDIR)$(UNITDIR)/secretfs.service
	install -m 0644 contrib/systemd/docker-volume-secretfs.service contrib/systemd/docker-volume-secretfs.socket $(DESTDIR)$(UNITDIR)/
	sed -i 's|/usr/local/bin/secretfs|$(PREFIX)/bin/secretfs|g' $(DESTDIR)$(UNITDIR)/secretfs.service $(DESTDIR)$(UNITDIR)/docker-volume-secretfs.service
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions
	$(BIN)/secretfs man | gzip -9n > $(DESTDIR)$(MANDIR)/man1/secretfs.1.gz
	$(BIN)/secretfs completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/secretfs
	$(BIN)/secretfs completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_secretfs

# Static release binaries for linux/amd64 and linux/arm64 (PROVIDERS as
# for build), each with an SPDX SBOM, and SHA256SUMS over all of them.
release: check-providers
	rm -rf $(DIST) && mkdir -p $(DIST)
	@set -e; for arch in amd64 arm64; do \
		out=$(DIST)/secretfs-$(VERSION)-linux-$$arch; \
		echo "building $$out"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -tags '$(TAGS)' -ldflags '-s -w $(LDFLAGS)' -o $$out ./cmd/secretfs; \
		SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || date +%s) $(GO) run ./internal/inventory sbom -version $(VERSION) $$out > $$out.spdx.json; \
	done
	cp LICENSE $(DIST)/LICENSE
	cd $(DIST) && sha256sum secretfs-* LICENSE > SHA256SUMS
	@cat $(DIST)/SHA256SUMS

# make release, then check what it made: the sums, static binaries of the
# right architectures, the version stamped, each SBOM naming its binary's
# SHA-256 and version.
release-check: release
	cd $(DIST) && sha256sum --check --strict SHA256SUMS
	@set -e; for arch in amd64 arm64; do \
		bin=$(DIST)/secretfs-$(VERSION)-linux-$$arch; \
		$(GO) version -m $$bin | grep -q "GOARCH=$$arch" || { echo "$$bin: not $$arch"; exit 1; }; \
		$(GO) version -m $$bin | grep -q "CGO_ENABLED=0" || { echo "$$bin: not static"; exit 1; }; \
		$(GO) version -m $$bin | grep -q -- "-trimpath=true" || { echo "$$bin: not -trimpath"; exit 1; }; \
		grep -q '"spdxVersion": "SPDX-2.3"' $$bin.spdx.json || { echo "$$bin: no SBOM"; exit 1; }; \
		sum=$$(sha256sum $$bin | cut -d' ' -f1); \
		grep -q "\"checksumValue\": \"$$sum\"" $$bin.spdx.json || { echo "$$bin: its SBOM describes another binary"; exit 1; }; \
		grep -q '"versionInfo": "$(VERSION)"' $$bin.spdx.json || { echo "$$bin: the SBOM lacks the version $(VERSION)"; exit 1; }; \
		grep -q '"licenseDeclared": "Apache-2.0"' $$bin.spdx.json || { echo "$$bin: the SBOM does not declare Apache-2.0"; exit 1; }; \
	done
	$(DIST)/secretfs-$(VERSION)-linux-amd64 version

# The licence of every module a binary (PROVIDERS as for build) carries.
licenses: build
	$(GO) run ./internal/inventory licenses $(BIN)/secretfs

clean:
	rm -rf $(BIN) $(DIST)
