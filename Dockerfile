# syntax=docker/dockerfile:1.7
# The stenopod worker image: the model baked in, ready on a RunPod GPU without downloading anything.
#
#   docker buildx build --build-arg MODELS=parakeet-tdt-0.6b-v3 -t IMAGE:0.1.0-parakeet-cuda12.8 .
#   MODELS: parakeet-tdt-0.6b-v3 (default) | whisper-large-v3-turbo | both     (builder/build.sh tags them)
#   DIARIZER: sortformer-4spk-v2 (default: speaker labels for jobs with "diarize": true) | "" (none)
#
# Layers run from least to most often changed (base, system packages, Python packages, models, code),
# so a code change rebuilds only the last small layer. See docs/deploy.md.

# CUDA 12.8 runtime + cuDNN 9: matches torch==2.13.0+cu128 (builder/requirements-torch-cuda.txt) and
# CTranslate2's CUDA 12 build; needs a host driver >= 570 (RunPod's "allowed CUDA versions" >= 12.8).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

# uv only installs a standalone CPython 3.11 (Ubuntu 22.04 ships 3.10); pip does the package installs.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${CUDA_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# ---------------------------------------------------------------------------------------------------
# build: compilers, the Python environment, the models. Nothing here ships except /opt and /models.
FROM base AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Compilers only for a dependency that ships no wheel; the runtime stage never sees them. Not pinned to
# exact .deb versions: Ubuntu drops superseded ones from its archive, which would break every rebuild.
# hadolint ignore=DL3008
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
    && apt-get update \
    && apt-get install -y --no-install-recommends build-essential

ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_PYTHON_PREFERENCE=only-managed
# The pinned uv decides the exact 3.11 patch release, so the same uv tag gives the same interpreter.
RUN --mount=from=uv,source=/uv,target=/usr/local/bin/uv \
    uv python install 3.11 \
    && "$(uv python find 3.11)" -m venv /opt/venv

WORKDIR /build
# torch first, alone: the CUDA 12.8 wheel, so nothing later can pull another torch build.
COPY builder/requirements-torch-cuda.txt builder/requirements-image-tools.txt builder/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r builder/requirements-image-tools.txt -r builder/requirements-torch-cuda.txt

# The worker's stack at the exact versions tested (constraints.txt, frozen from the CPU dev venv). Its
# cuda-bindings line is the CUDA 13 one the CPU venv resolved; the image keeps the 12.x pin installed above.
COPY builder/requirements-worker.txt builder/constraints.txt builder/
RUN --mount=type=cache,target=/root/.cache/pip \
    sed '/^cuda-bindings==/d' builder/constraints.txt > /tmp/constraints-cuda12.txt \
    && pip install -r builder/requirements-worker.txt -c /tmp/constraints-cuda12.txt \
    && pip check \
    && python -c "import torch; assert torch.version.cuda == '12.8', torch.version.cuda"

# ---------------------------------------------------------------------------------------------------
# models: fetched at build time only (the runtime is offline). Own stage, so changing MODELS re-runs
# neither the Python install nor anything before it; the hub cache mount survives between builds.
FROM build AS models
ARG MODELS=parakeet-tdt-0.6b-v3
# The speaker diarizer baked beside the ASR model (NVIDIA Sortformer, CC-BY-4.0); "" leaves it out.
ARG DIARIZER=sortformer-4spk-v2
ARG DEFAULT_MODEL=""
# Optional "ID=REV" (hub commit sha) to pin a model's revision; default: main, recorded in the manifest.
ARG MODEL_REVISION=""
COPY handler/__init__.py handler/__init__.py
COPY handler/engines/__init__.py handler/engines/manifest.py handler/engines/
COPY builder/fetch_models.py builder/hub_catalog.py builder/nemo_archive.py builder/
RUN --mount=type=cache,target=/root/.cache/huggingface \
    PYTHONPATH=/build python builder/fetch_models.py --dest /models --models "${MODELS}" \
        ${DIARIZER:+--models "${DIARIZER}"} \
        ${DEFAULT_MODEL:+--default "${DEFAULT_MODEL}"} \
        ${MODEL_REVISION:+--revision "${MODEL_REVISION}"}

# ---------------------------------------------------------------------------------------------------
# runtime: the CUDA runtime base, the interpreter, the venv, the models, then the code. No compilers.
FROM base AS runtime
ENV PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    STENOPOD_MODELS_DIR=/models \
    PYTHONPATH=/opt/stenopod \
    HOME=/home/stenopod
# RunPod runs the image's USER; uid 1000 owns nothing but its home (caches NeMo and numba write).
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/stenopod --shell /usr/sbin/nologin stenopod

COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
COPY --from=models /models /models

# The project last: the client SDK (its wheel: the job schema and storage the worker shares), then
# the worker itself, which is not packaged: /opt/stenopod/handler, on PYTHONPATH (set above).
WORKDIR /opt/stenopod
COPY pyproject.toml README.md ./
COPY client/ client/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info client/*.egg-info
COPY handler/ handler/

WORKDIR /home/stenopod
USER 1000:1000

# Declared last: a new version or commit changes labels only, never a cached layer.
ARG VERSION=0.1.0
ARG GIT_SHA=unknown
ARG MODELS=parakeet-tdt-0.6b-v3
ARG DIARIZER=sortformer-4spk-v2
LABEL org.opencontainers.image.title="stenopod worker" \
      org.opencontainers.image.description="Audio backlog transcription on RunPod serverless (Parakeet TDT / Whisper)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.licenses="MIT" \
      io.stenopod.models="${MODELS}" \
      io.stenopod.diarizer="${DIARIZER}" \
      io.stenopod.cuda="12.8"

CMD ["python", "-m", "handler"]
