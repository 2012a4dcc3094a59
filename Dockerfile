# chatd in a container: build with the Rust image, run on Debian slim.
#   docker build -t chatd .
#   docker run -p 8080:8080 -p 9090:9090 chatd
# Configure with CHATD_SECTION__FIELD variables (e.g. -e REDIS_URL=...,
# -e CHATD_LIMITS__QUEUE_MESSAGES=512) or mount /etc/chatd/config.yaml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p chatd

FROM debian:bookworm-slim
RUN useradd --system --no-create-home chatd && mkdir -p /etc/chatd /var/lib/chatd \
    && chown chatd /var/lib/chatd
COPY --from=build /src/target/release/chatd /usr/local/bin/chatd
USER chatd
# The default store is SQLite at data/chatd.db under the working directory:
# keep it on a volume (or set store.backend: postgres / mysql / none). With
# REDIS_URL and no store named, history is kept in that Redis instead.
WORKDIR /var/lib/chatd
VOLUME /var/lib/chatd
EXPOSE 8080 9090
# Docker sends SIGTERM on stop: chatd drains its clients (1001) and exits 0;
# give it at least shutdown.grace_period (docker stop -t 15).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/bin/sh", "-c", "if [ -f /etc/chatd/config.yaml ]; then exec chatd --config-file /etc/chatd/config.yaml \"$@\"; else exec chatd \"$@\"; fi", "chatd"]
