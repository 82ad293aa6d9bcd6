# syntax=docker/dockerfile:1
# Build: docker build -t registry.example.com/syncflow:0.2.0 .
# Run:   docker run --rm -v $PWD/syncflow.toml:/etc/syncflow/syncflow.toml \
#          -e SYNCFLOW_DATABASE_URL -e ERP_APISMITH_TOKEN registry.example.com/syncflow:0.2.0 sync --all
#
# Reproducible: the base image is pinned to a patch release, and every Python package
# (the build tools included) is installed from a lock file with hashes (pip --require-hashes),
# so a rebuild gets the same bytes or fails. Regenerate the locks with `bash scripts/lock.sh`.
#
# Base image: python:3.11.14-slim-bookworm. Its multi-architecture index digest, as published in
# public Dockerfiles that pin it (not checked here: no Docker engine on the machine that wrote this,
# and this file has not been built there), is
#   sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
# Verify with `docker buildx imagetools inspect python:3.11.14-slim-bookworm`, then pin both stages
# as python:3.11.14-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# pip, build, setuptools and wheel at pinned, hashed versions.
COPY requirements-build.lock requirements.lock ./
RUN python -m pip install --require-hashes -r requirements-build.lock
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# --no-isolation: build with the pinned setuptools above, not whatever is newest on PyPI.
RUN python -m build --wheel --no-isolation --outdir /wheels \
 && python -m pip wheel --wheel-dir /wheels --require-hashes -r requirements.lock

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin syncflow
COPY --from=build /wheels /wheels
COPY requirements.lock /tmp/requirements.lock
# Dependencies exactly as locked (hash-checked), then SyncFlow itself without resolving anything.
RUN python -m pip install --no-index --find-links /wheels --require-hashes -r /tmp/requirements.lock \
 && python -m pip install --no-index --no-deps /wheels/syncflow-*.whl \
 && rm -rf /wheels /tmp/requirements.lock
USER syncflow
WORKDIR /home/syncflow
ENV SYNCFLOW_CONFIG=/etc/syncflow/syncflow.toml PYTHONUNBUFFERED=1
ENTRYPOINT ["syncflow"]
CMD ["--help"]
