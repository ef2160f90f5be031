# phasegate's service (API, dispatcher, timeouts, reconciliation) for Cloud Run or any
# container platform. The pipeline file is not baked in: mount it at $PHASEGATE_CONFIG
# (on Cloud Run, as a Secret Manager volume; see README "Running on Google Cloud").
#
#   docker build -t phasegate .
#   docker run --rm -p 8080:8080 -e PHASEGATE_TOKEN=... \
#     -v "$PWD/phasegate.toml:/etc/phasegate/phasegate.toml:ro" phasegate

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/phasegate \
    && /opt/phasegate/bin/pip install '.[postgres,gcp]'

FROM python:3.12-slim
ENV PATH=/opt/phasegate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PHASEGATE_CONFIG=/etc/phasegate/phasegate.toml \
    PORT=8080
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin phasegate
COPY --from=build /opt/phasegate /opt/phasegate
USER 10001
EXPOSE 8080
# Cloud Run sets PORT; `phasegate serve` listens on it (it refuses 0.0.0.0 without a token).
CMD ["phasegate", "serve", "--host", "0.0.0.0"]
