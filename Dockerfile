# syntax=docker/dockerfile:1
# wyoming-lina for an NVIDIA GPU host, in the environment its GPU tests and benchmarks ran:
# Python 3.12, torch 2.11.0 built for CUDA 13.0, Triton 3.6.0, fla-core 0.6.0 (requirements/image.txt).
# Build:  docker build -t wyoming-lina .
# Run:    docker run --gpus all -p 10200:10200 -v ./data:/data wyoming-lina
# The host needs an NVIDIA driver for CUDA 13.0 (580 or newer) and the NVIDIA container toolkit.
FROM python:3.12.3-slim-bookworm

# Triton builds a small C launcher (with Python.h, which this image has) the first time it runs
# a kernel: the GPU path needs a C compiler at run time. Debian stable's gcc follows the base
# image's libc, so it is not pinned to a version.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    WYOMING_LINA_DATA_DIR=/data \
    WYOMING_LINA_URI_FILE=/tmp/wyoming-lina.uri \
    HF_HOME=/data/.hf \
    TRITON_CACHE_DIR=/data/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/data/.cache/torchinductor
WORKDIR /app

# Every Python package at the pinned version first (this layer is rebuilt only when the file
# changes), then the project itself without resolving anything again.
COPY requirements/image.txt requirements/image.txt
RUN pip install --no-cache-dir -r requirements/image.txt
COPY pyproject.toml setup.cfg README.md ./
COPY wyoming_lina wyoming_lina
COPY config config
COPY docker/entrypoint.sh /usr/local/bin/wyoming-lina-entrypoint
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && pip check \
 && python -c "import wyoming_lina.server.handler, wyoming_lina.triton_support"

RUN useradd --uid 1000 --user-group --create-home lina \
 && mkdir -p /data \
 && chown 1000:1000 /data
USER 1000:1000
VOLUME /data
EXPOSE 10200

# Model download and conversion happen on the first start (several GB): allow a long start.
# The check asks the address the server published (WYOMING_LINA_URI_FILE), whatever port it has.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30m --retries=3 \
    CMD ["python", "-m", "wyoming_lina.server.healthcheck"]

# Options alone run the server (docker run ... wyoming-lina --voice alice); a command runs that
# command (docker compose run --rm wyoming-lina voice list). The server is PID 1 and receives
# SIGTERM itself (requests in progress get up to --shutdown-timeout seconds, then it exits 0).
ENTRYPOINT ["wyoming-lina-entrypoint"]
CMD []
