# syntax=docker/dockerfile:1
# Build: docker build -t syncflow .   Run: docker run --rm -v $PWD/syncflow.toml:/etc/syncflow/syncflow.toml \
#   -e SYNCFLOW_DATABASE_URL -e ERP_APISMITH_TOKEN syncflow sync --all
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --upgrade pip build \
 && python -m build --wheel --outdir /wheels \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/syncflow-*.whl

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin syncflow
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels syncflow && rm -rf /wheels
USER syncflow
WORKDIR /home/syncflow
ENV SYNCFLOW_CONFIG=/etc/syncflow/syncflow.toml PYTHONUNBUFFERED=1
ENTRYPOINT ["syncflow"]
CMD ["--help"]
