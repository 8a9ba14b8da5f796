# Calo Balance Analytics: the one-shot CLI (default) and the Dagster service (`serve`).
#
#   docker build -t calo-log-analytics .
#   docker run --rm -v "$(pwd)/data:/data" -v "$(pwd)/out:/out" calo-log-analytics --log_dir /data --out /out
#   docker run -p 3000:3000 -v "$(pwd)/inbox:/inbox" -v "$(pwd)/reports:/reports" \
#     -v calo-home:/dagster_home calo-log-analytics serve
#
# BASE_IMAGE is any Debian-based image with python3 (>= 3.11) and its venv module;
# both stages use it, so the venv built in the first runs unchanged in the second.
ARG BASE_IMAGE=python:3.12-slim

# ---- builder: a venv with the package and its dependencies, from pyproject.toml's ranges
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt
# Then the package itself, as a wheel (README.m[d]: copied when present, pyproject's readme).
COPY README.m[d] pyproject.toml ./
COPY calo_assets ./calo_assets
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall -y pip \
 && find /opt/venv -name '*.dist-info' -path '*calo_balance_analytics*' -print

# ---- runtime: the base image, tini, the venv and the entry script; no compilers, no pip in the venv
FROM ${BASE_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && groupadd --gid 10001 calo \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin calo \
 && mkdir -p /app/docker /data /out /inbox /reports /dagster_home \
 && chown 10001:10001 /out /inbox /reports /dagster_home \
 && chmod 1777 /out /reports /dagster_home
# (1777 like /tmp: a fresh named volume on these folders is writable whatever --user runs it)

COPY --from=builder /opt/venv /opt/venv
COPY workspace.yaml dagster.yaml /app/
COPY docker/entrypoint.sh /app/docker/entrypoint.sh
RUN chmod 0755 /app/docker/entrypoint.sh \
 && chmod 0644 /app/workspace.yaml /app/dagster.yaml

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/dagster_home \
    CALO_INBOX=/inbox \
    CALO_STORAGE=/dagster_home/storage \
    CALO_REPORTS=/reports \
    CALO_HOST=0.0.0.0 \
    CALO_PORT=3000

USER 10001:10001
WORKDIR /app
EXPOSE 3000
# Service mode: the webserver answers /server_info and the daemon is alive.
# CLI mode: healthy at once (there is no service; the container exits when the run ends).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["/app/docker/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]
CMD ["--help"]
