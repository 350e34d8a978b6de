# flowd — thin wrappers around cargo (and packaging tools).
CARGO      ?= cargo
JOBS       ?= 2
MUSL       := x86_64-unknown-linux-musl
RELEASE    := target/$(MUSL)/release/flowd
PREFIX     ?= /usr
DESTDIR    ?=
SBINDIR    ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MANDIR     ?= $(PREFIX)/share/man

.PHONY: all build release test bench bench-ebpf bench-scan bench-metrics test-ebpf install clean

all: build

## build: debug build for this machine
build:
	$(CARGO) build -j$(JOBS)

## release: fully static musl binary (eBPF objects embedded) at target/x86_64-unknown-linux-musl/release/flowd
release:
	$(CARGO) build -j$(JOBS) --release --target $(MUSL)
	@ls -l $(RELEASE)

## test: unit + integration tests (privileged ones run when root)
test:
	$(CARGO) test -j$(JOBS) -- --test-threads=2

## bench: benchmarks (release build), side by side with the Python flowd when available
bench:
	$(CARGO) build -j$(JOBS) --release
	$(CARGO) bench -j$(JOBS) --bench np_api
	$(CARGO) run -j$(JOBS) --release --example bench_marker -- --repeat 1000000
	sh bench/ebpf_iperf.sh 5 5
	python3 bench/scan.py --flowd target/release/flowd scan --plugin netlink --n 1000 10000
	python3 bench/scan.py --flowd target/release/flowd scan --plugin netstat --n 1000 10000
	python3 bench/scan.py --flowd target/release/flowd firefly --count 100000
	python3 bench/metrics.py --flows 1000,10000 --scrapes 20 --wrk-seconds 10

## bench-scan: scan plugins (1,000/10,000 connections) and firefly relay throughput, as root
bench-scan:
	$(CARGO) build -j$(JOBS) --release
	python3 bench/scan.py --flowd target/release/flowd scan --plugin netlink --n 1000 10000
	python3 bench/scan.py --flowd target/release/flowd scan --plugin netstat --n 1000 10000
	python3 bench/scan.py --flowd target/release/flowd firefly --count 100000

## bench-metrics: scrape latency/size with 1k and 10k flows (fake and real sockets), wrk on /metrics under np_api load
bench-metrics:
	$(CARGO) build -j$(JOBS) --release
	python3 bench/metrics.py --flows 1000,10000 --scrapes 20 --wrk-seconds 10

## bench-ebpf: eBPF marker ns/packet (BPF_PROG_TEST_RUN) and iperf3 over veth, as root
bench-ebpf:
	$(CARGO) build -j$(JOBS)
	$(CARGO) run -j$(JOBS) --release --example bench_marker -- --repeat 1000000
	sh bench/ebpf_iperf.sh 5 5

## test-ebpf: the privileged marker tests only (as root)
test-ebpf:
	$(CARGO) test -j$(JOBS) --test integration marker:: -- --test-threads=2

## install: install the release binary, config and units under $(DESTDIR)
install: release
	install -D -m 0755 $(RELEASE) $(DESTDIR)$(SBINDIR)/flowd
	install -D -m 0644 etc/flowd.cfg $(DESTDIR)$(SYSCONFDIR)/flowd/flowd.cfg

clean:
	$(CARGO) clean
