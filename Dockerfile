# syntax=docker/dockerfile:1.7
# Tienda's images: every binary built once (profile `dist`: LTO, one codegen unit; auth,
# orders and notifications `dist-small`, sized for their idle memory — see Cargo.toml and
# docs/benchmarks.md "Memory at idle"), then one small non-root image per binary.
#
#   docker build --target operator -t ghcr.io/tienda-dev/tienda-operator:0.1.0 .
#   docker build --target gateway  -t ghcr.io/tienda-dev/tienda-gateway:0.1.0 .
#   (auth, products, orders, payments, notifications: the same, one target per component;
#   `tienda-<component>` images are what a Shop's `registry` + `version` name.)
#
# The runtime stage needs no shell or package manager at run time: it holds the binary, CA
# certificates and nothing that runs as root. Base images are pinned by version; pin them by
# digest in your registry mirror if you rebuild them.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_VERSION=12.12
ARG VERSION=0.1.0

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --bins \
      -p tienda-operator -p tienda-gateway -p tienda-products -p tienda-payments \
 && cargo build --profile dist-small --locked --bins \
      -p tienda-auth -p tienda-orders -p tienda-notifications \
 && mkdir -p /out \
 && for bin in tienda tienda-gateway tienda-products tienda-payments; do \
      cp "target/dist/$bin" /out/; \
    done \
 && for bin in tienda-auth tienda-orders tienda-notifications; do \
      cp "target/dist-small/$bin" /out/; \
    done

FROM docker.io/library/debian:${DEBIAN_VERSION}-slim AS runtime
ARG VERSION
LABEL org.opencontainers.image.source="https://github.com/tienda-dev/tienda" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Tienda"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# 65532: the uid the operator's pods run as (runAsUser); no home, no shell needed.
USER 65532:65532
WORKDIR /tmp

FROM runtime AS operator
LABEL org.opencontainers.image.title="tienda-operator"
COPY --from=build /out/tienda /usr/local/bin/tienda
ENTRYPOINT ["/usr/local/bin/tienda"]
CMD ["run"]

FROM runtime AS gateway
LABEL org.opencontainers.image.title="tienda-gateway"
COPY --from=build /out/tienda-gateway /usr/local/bin/tienda-gateway
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tienda-gateway"]

FROM runtime AS auth
LABEL org.opencontainers.image.title="tienda-auth"
COPY --from=build /out/tienda-auth /usr/local/bin/tienda-auth
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tienda-auth"]

FROM runtime AS products
LABEL org.opencontainers.image.title="tienda-products"
COPY --from=build /out/tienda-products /usr/local/bin/tienda-products
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tienda-products"]

FROM runtime AS orders
LABEL org.opencontainers.image.title="tienda-orders"
COPY --from=build /out/tienda-orders /usr/local/bin/tienda-orders
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tienda-orders"]

FROM runtime AS payments
LABEL org.opencontainers.image.title="tienda-payments"
COPY --from=build /out/tienda-payments /usr/local/bin/tienda-payments
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tienda-payments"]

FROM runtime AS notifications
LABEL org.opencontainers.image.title="tienda-notifications"
COPY --from=build /out/tienda-notifications /usr/local/bin/tienda-notifications
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tienda-notifications"]
