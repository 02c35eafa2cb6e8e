# Controller image. Not built or tested on the development machines (no container engine there).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba-cache
WORKDIR /app
COPY pyproject.toml README.md ./
COPY autoscaler ./autoscaler
COPY forecasting ./forecasting
COPY policies ./policies
COPY simulator ./simulator
RUN pip install --no-cache-dir . && useradd --uid 65532 --no-create-home nonroot
USER 65532:65532
ENTRYPOINT ["autoscaler"]
CMD ["--help"]
