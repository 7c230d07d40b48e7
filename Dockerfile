# Build: docker build -t tollgate .
# Run:   docker run -p 8080:8080 -v tollgate-data:/data -e TOLLGATE_ADMIN_TOKEN=... tollgate
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY data ./data
COPY benches ./benches
RUN cargo build --release --locked --bin tollgate \
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
ENTRYPOINT ["tollgate"]
CMD ["serve"]
