# The Arlen image: `arlen` on a distroless base (glibc, CA certificates, a
# non-root user), nothing else. Build with podman or docker:
#
#   podman build -t arlen:0.1.0 .
#
# The runtime stage is built by the test suite too, on machines that cannot
# pull base images: crates/arlen/tests/image.rs replaces its base with
# `scratch` plus what the binary links (the libraries distroless/cc holds),
# builds it with podman and runs the node from the image's filesystem.

FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p arlen --bin arlen \
 && strip target/release/arlen

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /src/target/release/arlen /usr/local/bin/arlen
COPY LICENSE-MIT LICENSE-APACHE /usr/share/doc/arlen/
# distroless' `nonroot`: the manifests' runAsUser.
USER 65532:65532
# HTTP, and gossip on the same port number over UDP.
EXPOSE 3000/tcp 3000/udp
ENTRYPOINT ["/usr/local/bin/arlen"]
CMD ["serve", "--host", "0.0.0.0", "--port", "3000"]
