# filegate: build in a Rust image, run as a non-root user in a slim Debian image.
#   docker build -t filegate .
#   docker compose up            (the gateway, Redis with AOF persistence, Mosquitto)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin filegate \
 && strip target/release/filegate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/filegate --create-home filegate
COPY --from=build /src/target/release/filegate /usr/local/bin/filegate
COPY config/docker.toml /etc/filegate/filegate.toml
USER filegate
WORKDIR /var/lib/filegate
# FTP control, FTP passive data, SFTP, HTTP (health and metrics).
EXPOSE 2121 30000-30009 2222 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["filegate"]
CMD ["serve", "--config", "/etc/filegate/filegate.toml"]
