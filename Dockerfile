# syntax=docker/dockerfile:1
# calldrift container image:
#   docker build --build-arg CALLDRIFT_REVISION=$(git rev-parse --short=12 HEAD) \
#     -t ghcr.io/calldrift/calldrift:0.1.0 .
# The binary links glibc dynamically (TLS is rustls with bundled roots), so
# the runtime is distroless "cc" (glibc, libgcc; no shell), as user nonroot.

FROM rust:1-bookworm AS build
# build.rs records it for --version and calldrift_build_info (.git is not in
# the build context, see .dockerignore); "unknown" when not given.
ARG CALLDRIFT_REVISION
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/calldrift /out/calldrift \
 && install -d -m 0700 /out/state

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/calldrift /usr/local/bin/calldrift
# Home of state_file: /var/lib/calldrift/state.json, writable by the user
# (Kubernetes mounts an emptyDir here; with docker, mount a volume).
COPY --from=build --chown=65532:65532 /out/state /var/lib/calldrift
USER 65532:65532
EXPOSE 9797
ENTRYPOINT ["/usr/local/bin/calldrift"]
CMD ["run", "--config", "/etc/calldrift/calldrift.yaml"]
