# Runtime image for dtest workers: the compiled binary and a default config on minimal Debian.
#
# Build the Linux binary on the host first (`bun run build` writes ./dtest). `bun build
# --compile` puts the Bun runtime inside the binary, which then needs only glibc, so the image
# holds no Bun and no node_modules. .dockerignore keeps everything else out of the context.
#
# The default config is /app/test-config.yml and /app is the working directory, so dtest's
# default `--config test-config.yml` finds it. To use your own, mount it over that path (see
# the commented volume in docker-compose.yml) or pass `--config` with a path you mount.
#
# With podman, scripts/container-engine.sh builds debian:bookworm-slim locally; with Docker it
# is the image of that name from Docker Hub.
FROM debian:bookworm-slim

# A fixed uid and gid, so a mounted config can be made readable to the worker on purpose.
RUN groupadd --system --gid 10001 dtest \
  && useradd --system --uid 10001 --gid dtest --home-dir /app --no-create-home \
    --shell /usr/sbin/nologin dtest

WORKDIR /app

# Both files stay owned by root: the worker reads them and never writes them.
COPY dtest /usr/local/bin/dtest
COPY test-config.yml /app/test-config.yml

USER dtest

# Exec form, so dtest is PID 1 and receives the SIGTERM from `docker-compose stop` itself.
ENTRYPOINT ["/usr/local/bin/dtest"]
CMD ["worker", "--queue", "queue_a"]
