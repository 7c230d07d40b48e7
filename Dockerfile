# Build: docker build -t tollgate .
# Run:   docker run -p 127.0.0.1:8080:8080 -v tollgate-data:/data -e TOLLGATE_ADMIN_TOKEN="$(openssl rand -hex 24)" tollgate
# (scripts/docker-context-check builds from exactly the paths copied here;
# .ci/run runs it, since no image registry is reachable from CI.)
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: stub targets for every one
# Cargo.toml declares (each [[bench]] and [[example]], read from it), so a
# change to the sources rebuilds only Tollgate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches examples \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for t in $(awk -F'"' '/^\[\[(bench|example)\]\]/ { dir = ($0 ~ /bench/) ? "benches" : "examples" } dir && /^name *=/ { print dir "/" $2; dir = "" }' Cargo.toml); do \
      echo 'fn main() {}' > "$t.rs"; done \
 && cargo build --release --locked --bin tollgate \
 && rm -rf src benches examples
COPY src ./src
COPY data ./data
COPY benches ./benches
COPY examples ./examples
# /docs opens with sections of the API guide, compiled into the binary.
COPY docs/API.md ./docs/API.md
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin tollgate \
 && strip target/release/tollgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data tollgate \
 && mkdir -p /data && chown tollgate /data
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
USER tollgate
VOLUME /data
EXPOSE 8080
ENV TOLLGATE_BIND=0.0.0.0:8080 \
    TOLLGATE_DATA_DIR=/data
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["tollgate", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tollgate"]
CMD ["serve"]
