# flowd container image: the static musl binary on an empty (scratch) base.
#
#   docker build -t flowd .            (or: make docker)
#   docker run -d --name flowd --privileged --network=host \
#       -v /etc/flowd:/etc/flowd:ro -v /run/flowd:/run flowd
#
# Run like the Python flowd's container: --network=host so that fireflies, sock_diag and
# the eBPF marker see the host's connections and interfaces; --privileged (or at least
# --cap-add NET_ADMIN --cap-add BPF --cap-add PERFMON [--cap-add SYS_ADMIN on kernels
# < 5.8]) for the eBPF marker. The config is read from /etc/flowd/flowd.cfg (mount the
# host's /etc/flowd). The named pipe and PID file default to /var/run (= /run in the
# image): mount a host directory there to share the pipe with a transfer service.

ARG RUST_VERSION=1.95

# --- build: static x86_64 musl binary with the eBPF objects embedded -------------------
FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools clang llvm libbpf-dev file ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN make release JOBS="$(nproc)" \
 && install -D -m 0755 target/x86_64-unknown-linux-musl/release/flowd /rootfs/usr/sbin/flowd \
 && install -D -m 0644 etc/flowd.cfg /rootfs/etc/flowd/flowd.cfg \
 && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
 && mkdir -p /rootfs/run /rootfs/var /rootfs/tmp \
 && ln -s ../run /rootfs/var/run \
 && chmod 1777 /rootfs/tmp \
 && printf 'root:x:0:0:root:/:/usr/sbin/flowd\nnobody:x:65534:65534:nobody:/:/usr/sbin/flowd\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\nnogroup:x:65534:\n' > /rootfs/etc/group

# --- runtime: nothing but flowd, its config, CA certificates and /run ------------------
FROM scratch
COPY --from=build /rootfs/ /
# https registries (FLOW_MAP_API) are verified against this bundle.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# SIGTERM stops flowd cleanly (pipe and PID file removed); `docker kill -s HUP` reloads.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/sbin/flowd", "--fg"]
CMD ["-c", "/etc/flowd/flowd.cfg"]
