# flowd — thin wrappers around cargo (and packaging tools).
CARGO      ?= cargo
JOBS       ?= 2
# Release target: x86_64-unknown-linux-musl, or aarch64-unknown-linux-musl (cross build,
# see release-aarch64).
TARGET     ?= x86_64-unknown-linux-musl
MUSL       := $(TARGET)
RELEASE    := target/$(TARGET)/release/flowd
# What install-files installs (the rpm and deb builds pass the release binary).
BIN        ?= $(RELEASE)
PREFIX     ?= /usr
DESTDIR    ?=
SBINDIR    ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MANDIR     ?= $(PREFIX)/share/man

VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
PKGREL     ?= 1
ARCH       := $(firstword $(subst -, ,$(TARGET)))
DEB_ARCH   := $(if $(filter aarch64,$(ARCH)),arm64,amd64)
DIST       := dist
RPM        := $(DIST)/flowd-$(VERSION)-$(PKGREL).$(ARCH).rpm
DEB        := $(DIST)/flowd_$(VERSION)-$(PKGREL)_$(DEB_ARCH).deb
DEBROOT    := target/pkg/deb-$(DEB_ARCH)
# The release binary must stay small enough to copy around: 3 MiB.
MAX_SIZE   := 3145728
IMAGE      ?= flowd:$(VERSION)
CLANG      ?= clang
LLVM_STRIP ?= llvm-strip
# <asm/types.h> lives in the multiarch directory on Debian/Ubuntu.
BPF_INCLUDE := $(addprefix -I,$(wildcard /usr/include/$(shell uname -m)-linux-gnu))
# The Python flowd 1.1.7 for side-by-side metrics benchmarks (pip install scitags==1.1.7
# into this venv); skipped when absent.
PYFLOWD    ?= /work/pyflowd
PYFLOWD_ARGS := $(if $(wildcard $(PYFLOWD)/bin/python),--python $(PYFLOWD)/bin/python $(firstword $(wildcard $(PYFLOWD)/lib/python3*/site-packages/usr/sbin/flowd)))

# aarch64 cross build: Debian's gcc-aarch64-linux-gnu with musl-dev:arm64 through
# scripts/aarch64-linux-musl-gcc (C code of ring, and the final link).
export CC_aarch64_unknown_linux_musl ?= $(CURDIR)/scripts/aarch64-linux-musl-gcc
export AR_aarch64_unknown_linux_musl ?= aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER ?= $(CURDIR)/scripts/aarch64-linux-musl-gcc

.PHONY: all build release ebpf test-deps lint release-aarch64 test test-pkg-build bench install install-files \
	rpm deb packages docker clean bench-ebpf bench-scan bench-relay bench-metrics bench-ongoing bench-policy test-ebpf test-stun

all: build

include fuzz/Makefile.inc
include bench/Makefile.inc

## build: debug build for this machine
build:
	$(CARGO) build -j$(JOBS)

## ebpf: rebuild the committed eBPF object ebpf/flowd.bpf.o (clang, libbpf headers) and
## record the sha256 of the sources it was built from in ebpf/flowd.bpf.o.sha256. Commit
## both: builds without clang embed that object, and a test fails when it is stale.
ebpf:
	$(CLANG) -O2 -g -target bpf -Wall -fdebug-prefix-map=$(CURDIR)=. -Iebpf $(BPF_INCLUDE) -c ebpf/flowd.bpf.c -o ebpf/flowd.bpf.o
	$(LLVM_STRIP) -g ebpf/flowd.bpf.o
	sha256sum $(sort $(wildcard ebpf/*.c ebpf/*.h)) ebpf/flowd.bpf.o > ebpf/flowd.bpf.o.sha256
	@cat ebpf/flowd.bpf.o.sha256

## release: fully static musl binary (eBPF objects embedded) at target/$(TARGET)/release/flowd;
## fails unless it is statically linked and at most 3 MiB
release:
	$(CARGO) build -j$(JOBS) --release --target $(TARGET)
	@ls -l $(RELEASE)
	@file -b $(RELEASE) | grep -q 'statically linked' || { echo "error: $(RELEASE) is not statically linked: $$(file -b $(RELEASE))"; exit 1; }
	@size=$$(stat -c %s $(RELEASE)); [ $$size -le $(MAX_SIZE) ] || { echo "error: $(RELEASE) is $$size bytes, more than $(MAX_SIZE)"; exit 1; }
	@echo "$(RELEASE): $$(stat -c %s $(RELEASE)) bytes, $$(file -b $(RELEASE) | cut -d, -f1-5)"

## release-aarch64: cross-built static aarch64 binary (needs gcc-aarch64-linux-gnu, musl-dev:arm64)
release-aarch64:
	$(MAKE) release TARGET=aarch64-unknown-linux-musl

## test: the whole suite. Installs what the tests need when it can (scripts/test-deps:
## apt-get/dnf as root, rustup components, pip) and prints one SKIP line per group it
## cannot run; then the gates (rustfmt, clippy), the release build and packages the
## packaging tests inspect, unit + integration tests, and a short run of every fuzz target
test: test-deps lint test-pkg-build
	$(CARGO) test -j$(JOBS) -- --test-threads=2
	$(MAKE) fuzz-smoke

## test-deps: install the test suite's tools when possible; print what stays skipped
test-deps:
	@bash scripts/test-deps

## lint: the gates: cargo fmt --check and clippy with warnings as errors
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy -j$(JOBS) --all-targets -- -D warnings

# Builds dist/*.rpm and dist/*.deb, and release-2 copies in target/pkg/upgrade/ for the
# upgrade tests, when the tools are there (tests/packaging.rs skips otherwise, and fails
# under CI=true).
test-pkg-build:
	@if ! rustup target list --installed 2>/dev/null | grep -qx '$(TARGET)' && [ ! -d "$$(rustc --print sysroot)/lib/rustlib/$(TARGET)" ]; then \
		echo "SKIP: packages: rust target $(TARGET) not installed"; \
	elif ! command -v musl-gcc >/dev/null; then echo "SKIP: packages: musl-gcc (musl-tools) missing"; \
	else \
		$(MAKE) release && \
		if command -v dpkg-deb >/dev/null; then $(MAKE) deb; else echo "SKIP: deb: dpkg-deb missing"; fi && \
		if command -v rpmbuild >/dev/null; then $(MAKE) rpm; else echo "SKIP: rpm: rpmbuild missing"; fi && \
		if command -v dpkg-deb >/dev/null; then $(MAKE) deb PKGREL=2 DIST=target/pkg/upgrade; fi && \
		if command -v rpmbuild >/dev/null; then $(MAKE) rpm PKGREL=2 DIST=target/pkg/upgrade; fi; \
	fi

## bench: benchmarks (release build), side by side with the Python flowd when available
bench:
	$(CARGO) build -j$(JOBS) --release
	$(CARGO) bench -j$(JOBS) --bench np_api
	$(CARGO) run -j$(JOBS) --release --example bench_marker -- --repeat 1000000
	sh bench/ebpf_iperf.sh 5 5
	python3 bench/scan.py --flowd target/release/flowd scan --plugin netlink --n 1000 10000
	python3 bench/scan.py --flowd target/release/flowd scan --plugin netstat --n 1000 10000
	python3 bench/relay.py --flowd target/release/flowd --forward 0 1 4 --seconds 5 --repeat 3
	$(CARGO) run -j$(JOBS) --release --example bench_render -- --flows 10000
	python3 bench/metrics.py --flows 1000,10000 --scrapes 20 --wrk-seconds 10 $(PYFLOWD_ARGS)
	python3 bench/ongoing.py --flowd target/release/flowd --n 10000 --interval 2 --periods 10
	$(MAKE) bench-policy

## bench-scan: scan plugins (1,000/10,000 connections), as root
bench-scan:
	$(CARGO) build -j$(JOBS) --release
	python3 bench/scan.py --flowd target/release/flowd scan --plugin netlink --n 1000 10000
	python3 bench/scan.py --flowd target/release/flowd scan --plugin netstat --n 1000 10000

## bench-relay: firefly relay throughput on loopback, 0/1/4 FIREFLY_FORWARD receivers, next to the sendto floor (no root)
bench-relay:
	$(CARGO) build -j$(JOBS) --release
	python3 bench/relay.py --flowd target/release/flowd --forward 0 1 4 --seconds 5 --repeat 3

## bench-metrics: scrape latency/size with 1k and 10k flows (fake and real sockets), wrk on /metrics under np_api load
bench-metrics:
	$(CARGO) build -j$(JOBS) --release
	$(CARGO) run -j$(JOBS) --release --example bench_render -- --flows 10000
	python3 bench/metrics.py --flows 1000,10000 --scrapes 20 --wrk-seconds 10 $(PYFLOWD_ARGS)

## bench-ongoing: 10,000 open loopback TCP flows, ongoing fireflies with/without tcp_info: CPU per period (root)
bench-ongoing:
	$(CARGO) build -j$(JOBS) --release
	python3 bench/ongoing.py --flowd target/release/flowd --n 10000 --interval 2 --periods 10

## bench-policy: site policy cost per event with 1,000 excluded networks; GET /flows with 10,000 flows (in process and against the binary)
bench-policy:
	$(CARGO) build -j$(JOBS) --release
	$(CARGO) run -j$(JOBS) --release --example bench_policy -- --networks 1000 --events 1000000 --flows 10000 --flowd target/release/flowd

## gen-config: rewrite etc/flowd.cfg, the man page's CONFIGURATION section and
## docs/configuration.md from the config key table (src/config/keys.rs)
.PHONY: gen-config
gen-config:
	$(CARGO) run -q -j$(JOBS) --example gen_config

## test-stun: STUN/discovery/tcp_info unit tests and integration tests (the netns test needs root)
test-stun:
	$(CARGO) test -j$(JOBS) --lib -- wire::stun discovery tcp_stats netlink_json
	$(CARGO) test -j$(JOBS) --test integration stun:: -- --test-threads=2

## bench-ebpf: eBPF marker ns/packet (BPF_PROG_TEST_RUN) and iperf3 over veth, as root
bench-ebpf:
	$(CARGO) build -j$(JOBS)
	$(CARGO) run -j$(JOBS) --release --example bench_marker -- --repeat 1000000
	sh bench/ebpf_iperf.sh 5 5

## test-ebpf: the privileged marker tests only (as root)
test-ebpf:
	$(CARGO) test -j$(JOBS) --test integration marker:: -- --test-threads=2

## install: build the release binary and install it with the config, units and man page
## under $(DESTDIR) (the config is never overwritten)
install: release install-files

## install-files: install $(BIN) and the other files without building (used by rpm and deb)
install-files:
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/flowd
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/flowd/flowd.cfg ]; then \
		echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/flowd/flowd.cfg"; \
	else install -D -m 0644 etc/flowd.cfg $(DESTDIR)$(SYSCONFDIR)/flowd/flowd.cfg; fi
	install -D -m 0644 etc/flowd.service $(DESTDIR)$(UNITDIR)/flowd.service
	install -D -m 0644 etc/flowd@.service $(DESTDIR)$(UNITDIR)/flowd@.service
	install -D -m 0644 etc/flowd.socket $(DESTDIR)$(UNITDIR)/flowd.socket
	install -D -m 0644 etc/flowd@.socket $(DESTDIR)$(UNITDIR)/flowd@.socket
	install -D -m 0644 etc/grafana/flowd-dashboard.json $(DESTDIR)$(PREFIX)/share/flowd/grafana/flowd-dashboard.json
	install -d -m 0755 $(DESTDIR)$(MANDIR)/man8
	gzip -9n < etc/flowd.8 > $(DESTDIR)$(MANDIR)/man8/flowd.8.gz
	chmod 0644 $(DESTDIR)$(MANDIR)/man8/flowd.8.gz

## rpm: dist/flowd-VERSION-PKGREL.ARCH.rpm (rpmbuild, xz payload, from the static binary)
rpm: release
	@mkdir -p $(DIST) target/pkg/rpmbuild
	rpmbuild -bb --quiet --target $(ARCH) \
		--define "_topdir $(CURDIR)/target/pkg/rpmbuild" \
		--define "_rpmdir $(CURDIR)/$(DIST)" \
		--define "_rpmfilename %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
		--define "flowd_version $(VERSION)" \
		--define "flowd_release $(PKGREL)" \
		--define "flowd_srcdir $(CURDIR)" \
		--define "flowd_binary $(CURDIR)/$(RELEASE)" \
		rpm/flowd.spec
	@ls -l $(RPM)

## deb: dist/flowd_VERSION-PKGREL_ARCH.deb (dpkg-deb, xz, from the static binary)
deb: release
	rm -rf $(DEBROOT)
	$(MAKE) install-files DESTDIR=$(CURDIR)/$(DEBROOT) BIN=$(RELEASE) \
		PREFIX=/usr SYSCONFDIR=/etc UNITDIR=/lib/systemd/system MANDIR=/usr/share/man
	install -D -m 0644 deb/copyright $(DEBROOT)/usr/share/doc/flowd/copyright
	install -d -m 0755 $(DEBROOT)/DEBIAN
	sed -e 's/@VERSION@/$(VERSION)-$(PKGREL)/' -e 's/@ARCH@/$(DEB_ARCH)/' \
		-e "s/@SIZE@/$$(du -sk --apparent-size $(DEBROOT) | cut -f1)/" deb/control > $(DEBROOT)/DEBIAN/control
	install -m 0644 deb/conffiles $(DEBROOT)/DEBIAN/conffiles
	install -m 0755 deb/postinst deb/prerm deb/postrm $(DEBROOT)/DEBIAN/
	cd $(DEBROOT) && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums
	@mkdir -p $(DIST)
	dpkg-deb --root-owner-group -Zxz --build $(DEBROOT) $(DEB)

## packages: both packages
packages: rpm deb

## docker: build the container image $(IMAGE) (needs a Docker engine)
docker:
	docker build -t $(IMAGE) .

clean:
	$(CARGO) clean
	rm -rf $(DIST)
