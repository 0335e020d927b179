# nemo-spatial image: the trainer, the vLLM generation server and the reward service (launcher/submit.py).
#
#   docker build -t nemo-spatial .                          # default: on the NeMo framework container
#   docker build --build-arg BASE=cuda -t nemo-spatial .    # a CUDA devel base + the project's own lock
#   enroot import -o nemo-spatial.sqsh dockerd://nemo-spatial   # the file a cluster file names (container.image)
#
# Every package version comes from requirements/ (stack.lock, nodeps.txt, gpu.txt), never from this file;
# tests/unit/test_docker_pins.py checks that they agree. Which pins each path ends with:
#   BASE=nemo (default): the container's torch (NGC 2.13.0a0) and Transformer Engine (2.17) are kept; vLLM is
#     built from source against that torch at gpu.txt's version (a PyPI wheel is linked against torch==2.13.0
#     exactly), megatron-core / megatron-bridge / transformers / tokenizers at the lock's versions (--no-deps),
#     the rest of the lock without torch, triton and the nvidia-* wheels. What users run; not bit-exact pins.
#   BASE=cuda: exact pins: the lock's torch 2.13.0 (PyPI, cu130), vLLM's PyPI CUDA wheel, Transformer Engine
#     built from source for Hopper; the same torch and transformers as the CPU tests.
# Both: FlashInfer cubins and JIT cache at vLLM's flashinfer-python version, then the CPU unit tests.
ARG BASE=nemo
ARG NEMO_IMAGE=nvcr.io/nvidia/nemo:26.08
ARG CUDA_IMAGE=nvcr.io/nvidia/cuda-dl-base:26.05-cuda13.2-devel-ubuntu24.04

# ---- BASE=nemo: the NeMo framework container plus what it lacks --------------------------------------------
FROM ${NEMO_IMAGE} AS base-nemo
ARG MAX_JOBS=16
# NGC images constrain pip to their own builds (/etc/pip/constraint.txt); the pins below replace some of them.
ENV PIP_CONSTRAINT="" VLLM_USE_STANDALONE_COMPILE=0 TORCH_CUDA_ARCH_LIST="9.0"
WORKDIR /opt/nemo-spatial
COPY requirements/ requirements/
RUN pin() { sed -n "s/^$1==//p" requirements/stack.lock requirements/nodeps.txt requirements/gpu.txt | head -n1; } \
 && VLLM_VERSION=$(pin vllm) \
 && git clone --depth 1 --branch "v${VLLM_VERSION}" https://github.com/vllm-project/vllm /tmp/vllm \
 && cd /tmp/vllm && python use_existing_torch.py \
 && pip install -r requirements/build/cuda.txt \
 && MAX_JOBS=${MAX_JOBS} pip wheel --no-deps --no-build-isolation -w /tmp/wheels . \
 && pip install --no-deps /tmp/wheels/vllm-*.whl \
 && cd /opt/nemo-spatial && rm -rf /tmp/vllm /tmp/wheels \
 && pip install --no-deps "megatron-core==$(pin megatron-core)" "megatron-bridge==$(pin megatron-bridge)" \
      "transformers==$(pin transformers)" "tokenizers==$(pin tokenizers)" \
 && grep -vE '^(torch|torchvision|torchaudio|triton|nvidia-|transformer.engine|megatron-|transformers|tokenizers)' \
      requirements/stack.lock > /tmp/rest.txt \
 && pip install --no-deps -r /tmp/rest.txt

# ---- BASE=cuda: a CUDA devel base and the project's own lock (exact pins) ----------------------------------
FROM ${CUDA_IMAGE} AS base-cuda
ARG MAX_JOBS=16
ARG NVTE_CUDA_ARCHS=90
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3.12 python3.12-venv python3.12-dev git curl build-essential cmake ninja-build libibverbs-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv
WORKDIR /opt/nemo-spatial
COPY requirements/ requirements/
RUN pin() { sed -n "s/^$1==//p" requirements/stack.lock requirements/nodeps.txt requirements/gpu.txt | head -n1; } \
 && pip install -r requirements/stack.lock \
 && pip install --no-deps "vllm==$(pin vllm)" "megatron-bridge==$(pin megatron-bridge)" \
 && python -c "import importlib.metadata as m, sys; t = m.version('torch'); sys.exit(t != '$(pin torch)' and f'torch {t}')"
# Transformer Engine against this torch, for Hopper only; cuDNN from the pip wheel torch brought (as NeMo RL).
ENV CUDNN_PATH=/opt/venv/lib/python3.12/site-packages/nvidia/cudnn \
    CUDNN_HOME=/opt/venv/lib/python3.12/site-packages/nvidia/cudnn \
    CPLUS_INCLUDE_PATH=/usr/local/cuda/include/cccl
RUN NVTE_FRAMEWORK=pytorch NVTE_CUDA_ARCHS=${NVTE_CUDA_ARCHS} MAX_JOBS=${MAX_JOBS} \
      pip install --no-build-isolation "$(grep '^transformer-engine' requirements/gpu.txt)"

# ---- both: FlashInfer kernels baked in, the project, the CPU unit tests --------------------------------------
FROM base-${BASE} AS final
RUN pin() { sed -n "s/^$1==//p" requirements/gpu.txt | head -n1; } \
 && pip install --no-deps "flashinfer-python==$(pin flashinfer-python)" "flashinfer-cubin==$(pin flashinfer-cubin)" \
 && pip install --no-deps --extra-index-url https://flashinfer.ai/whl/cu130 \
      "flashinfer-jit-cache==$(pin flashinfer-jit-cache)"
ENV HF_HOME=/hf_cache VLLM_CACHE_ROOT=/hf_cache/vllm RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
COPY . /opt/nemo-spatial
RUN pip install --no-deps --no-build-isolation -e /opt/nemo-spatial \
 && python -c "import vllm, megatron.core, megatron.bridge, nemo_spatial.launcher.submit" \
 && cd /opt/nemo-spatial && python -m pytest -q -p no:cacheprovider -m "not slow and not gpu" tests/unit
WORKDIR /opt/nemo-spatial
