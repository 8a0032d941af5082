# strata: one command for the main job, one for the tests.
#   make up     build (release), start the stack on /run/strata, seed a local registry with a
#               busybox-static image, pull it through the gateway and run a container of it
#   make down   stop the stack started by `make up`
#   make test   formatting, lints and every test; installs what they need first (test-deps)
#   make bench  side-by-side benchmarks against containerd

SHELL   := /bin/bash
CARGO   ?= cargo
PREFIX  ?= /usr/local
RUN     ?= /run/strata
STATE   ?= /var/lib/strata
SERVICES = content snapshotter images tasks network gateway
TEST_LOG ?= $(or $(CARGO_TARGET_DIR),target)/test.log

.PHONY: all build release test test-deps lint fmt up down install bench clean

all: build

build:
	$(CARGO) build --workspace --bins

# The supervisor ships statically linked and whole-program optimized (profile `shim`): one
# runs per container, and a static non-PIE binary shares its pages and dirties none for
# relocations. It replaces the plain release build of it beside the other binaries.
SHIM_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
release:
	$(CARGO) build --release --workspace --bins
	RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
	  $(CARGO) build --profile shim -p strata-shim --target $(SHIM_TARGET)
	install -m 0755 $(or $(CARGO_TARGET_DIR),target)/$(SHIM_TARGET)/shim/strata-shim \
	  $(or $(CARGO_TARGET_DIR),target)/release/strata-shim

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Service binaries are built first: integration tests start them on temporary sockets.
# The last line sums every test binary's result ("N passed, N failed").
# What the tests need (containerd, registry, runtimes, protoc, grpcurl): installed on Debian,
# checked elsewhere. grpcurl's pip scripts directory joins the PATH of the tests.
PY_SCRIPTS := $(shell python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)
test-deps:
	deploy/scripts/test-deps.sh

test: test-deps lint build
	@mkdir -p $(dir $(TEST_LOG))
	set -o pipefail; PATH="$(PY_SCRIPTS):$$PATH" $(CARGO) test --workspace --no-fail-fast --lib --bins --tests -- --test-threads=2 2>&1 | tee $(TEST_LOG)
	@awk '/^test result:/ {p+=$$4; f+=$$6} END {printf "%d passed, %d failed\n", p, f}' $(TEST_LOG)

up: release
	RUN=$(RUN) STATE=$(STATE) BIN=$(CURDIR)/target/release deploy/scripts/stack.sh up $(SERVICES)
	deploy/scripts/stack.sh demo

down:
	RUN=$(RUN) deploy/scripts/stack.sh down $(SERVICES)

install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/strata $(DESTDIR)/etc/systemd/system
	install -m 0755 target/release/strata target/release/strata-shim $(DESTDIR)$(PREFIX)/bin/
	for s in $(SERVICES); do \
	  install -m 0755 target/release/strata-$$s $(DESTDIR)$(PREFIX)/bin/; \
	  install -m 0644 deploy/systemd/strata-$$s.service $(DESTDIR)/etc/systemd/system/; \
	  [ -e $(DESTDIR)/etc/strata/$$s.toml ] || install -m 0644 deploy/config/$$s.toml $(DESTDIR)/etc/strata/; \
	done

# One table of every strata/containerd ratio (bench/run.sh; each bench/*.sh also runs alone).
bench: release
	BIN=$(CURDIR)/target/release bench/run.sh

clean:
	$(CARGO) clean

# Fuzzing (not part of `make test`): each cargo-fuzz target of fuzz/ runs FUZZ_SECONDS (60 by
# default), one after another in one process each, from its seed corpus fuzz/corpus/<target>.
# Needs the nightly toolchain and root (layer_extract mounts a private tmpfs); installs
# cargo-fuzz if missing. Inputs found are kept in target/fuzz/corpus/<target>, crashes in
# fuzz/artifacts/<target>. One target: `make fuzz FUZZ_TARGETS=layer_extract`.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= layer_extract reference_parse manifest_parse filter_parse header_rewrite
.PHONY: fuzz
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(CURDIR)/target/fuzz/corpus/$$t && \
	  cargo +nightly fuzz run --fuzz-dir . --target-dir $(CURDIR)/target/fuzz $$t \
	    $(CURDIR)/target/fuzz/corpus/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) \
	    || exit 1; \
	done
