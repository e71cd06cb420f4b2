# syntax=docker/dockerfile:1
# wyoming-lina for an NVIDIA GPU host. Build:  docker build -t wyoming-lina .
# Run:    docker run --gpus all -p 10200:10200 -v ./data:/data wyoming-lina
# The PyTorch image's CUDA must be supported by the host driver (CUDA 12.8 needs driver >= 570;
# pick an older image with --build-arg TORCH_IMAGE=... for older drivers).
ARG TORCH_IMAGE=pytorch/pytorch:2.7.0-cuda12.8-cudnn9

# --- build: causal-conv1d needs nvcc ------------------------------------------------------------
FROM ${TORCH_IMAGE}-devel AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# GPU generations to compile for (Ampere, Ada, Hopper); narrow it to build faster.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0"
ENV TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}
RUN pip install ninja packaging \
 && pip wheel --no-deps --no-build-isolation --wheel-dir /wheels "causal-conv1d>=1.4"

# --- runtime ------------------------------------------------------------------------------------
FROM ${TORCH_IMAGE}-runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/data/.hf
WORKDIR /app

# Dependencies first (package metadata only), so this layer is rebuilt only when they change.
# torch comes from the base image and is pinned so pip never swaps it for another build.
COPY --from=build /wheels /wheels
COPY pyproject.toml setup.cfg README.md ./
COPY wyoming_lina/__init__.py wyoming_lina/__init__.py
RUN python -c "import torch; print('torch==' + torch.__version__)" > /tmp/torch.txt \
 && pip install -c /tmp/torch.txt /wheels/*.whl ".[gpu]" \
 && rm -rf /wheels /tmp/torch.txt

# The code, then the package itself (no dependency resolution again).
COPY wyoming_lina wyoming_lina
COPY config config
RUN pip install --no-deps --no-build-isolation . && python -c "import wyoming_lina.server.handler"

RUN useradd --create-home --uid 1000 lina && mkdir -p /data && chown lina:lina /data
USER lina
VOLUME /data
EXPOSE 10200

# Model download and conversion happen on the first start (several GB): allow a long start.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30m --retries=3 \
    CMD ["python", "-m", "wyoming_lina.server.healthcheck", "tcp://127.0.0.1:10200"]

# Exec form: the server is PID 1 and receives SIGTERM itself (it lets requests in progress
# finish for up to --shutdown-timeout seconds, then exits 0). Extra options go after the image
# name (docker run ... wyoming-lina --voice alice) or in compose's `command:`.
ENTRYPOINT ["wyoming-lina", "serve", "--uri", "tcp://0.0.0.0:10200", "--data-dir", "/data"]
CMD []
