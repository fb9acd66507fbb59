# body4d on a Hugging Face Docker GPU Space (README front matter: sdk: docker, app_port: 7860), or any
# machine with the NVIDIA Container Toolkit:
#
#   docker build -t body4d .
#   docker run --gpus all -p 7860:7860 -v body4d-data:/data -e HF_TOKEN -e BODY4D_FETCH_CHECKPOINTS=1 body4d
#
# PyTorch CUDA flavour. The default installs the PyPI torch/torchvision wheels, built for CUDA 13.0: they
# need an NVIDIA driver >= 580. For an older driver pick a wheel flavour of the PyTorch index and a base
# image of the same CUDA major version (the base image's NVIDIA_REQUIRE_CUDA makes the container runtime
# refuse a driver that is too old for it), e.g. for CUDA 12.8 (driver >= 570):
#
#   docker build --build-arg TORCH_CUDA=cu128 \
#                --build-arg BASE_IMAGE=docker.io/nvidia/cuda:12.8.1-runtime-ubuntu22.04 -t body4d:cu128 .
#
# The app logs the driver, CUDA runtime, torch, GPU and OpenGL renderer when it starts.
# Checkpoints: scripts/space_start.sh (the entrypoint) fetches them into /data/checkpoints when
# BODY4D_FETCH_CHECKPOINTS=1 and HF_TOKEN are set (Space variables/secrets); otherwise run
# `python scripts/setup.py --ckpt-root /data/checkpoints` once (e.g. over Dev Mode SSH).
#
# Only classic Dockerfile syntax (no BuildKit-only features): docker, the Space builder and buildah read it.

# Ubuntu 22.04 (jammy): its own python3.11 package is a pre-release build, and 24.04 (noble) has none
# (and already has a uid 1000 user). The deadsnakes PPA publishes the final 3.11 releases for jammy as
# Debian packages (security updates through apt), so that is where Python comes from; the build checks
# below that the interpreter is a final 3.11 release.
ARG BASE_IMAGE=docker.io/nvidia/cuda:13.0.1-runtime-ubuntu22.04
FROM ${BASE_IMAGE}

# Empty: the PyPI wheels (CUDA 13.0). Otherwise a wheel flavour of https://download.pytorch.org/whl/,
# e.g. cu128 or cu126.
ARG TORCH_CUDA=
# The signing key of the deadsnakes PPA (ppa:deadsnakes/ppa); apt checks the PPA's Release file with it.
ARG DEADSNAKES_KEY=F23C5A6CF475977595C89F51BA6932366A755776

# Debian packages. ca-certificates (+ curl, which Dev Mode needs anyway) only to add the PPA over HTTPS.
# Runtime (the Makefile's RUNTIME_APT_PACKAGES, checked by tests/test_dockerfile.py): libGL/glib for
# OpenCV, EGL + Mesa for the mesh renderer. Dev Mode (huggingface.co/docs/hub/spaces-dev-mode): bash for
# its SSH sessions, curl, wget, procps for its VS Code server, git + git-lfs to push from the Space; the
# SSH server itself is supplied by Hugging Face; rsync for scripts/cloud/sync_data.sh (it runs on both
# ends of the connection). Python: python3.11 + python3.11-venv (venv, ensurepip).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl \
    && install -d -m 0755 /etc/apt/keyrings \
    && curl -fsSL "https://keyserver.ubuntu.com/pks/lookup?op=get&options=mr&search=0x${DEADSNAKES_KEY}" \
        -o /etc/apt/keyrings/deadsnakes.asc \
    && . /etc/os-release \
    && echo "deb [signed-by=/etc/apt/keyrings/deadsnakes.asc] https://ppa.launchpadcontent.net/deadsnakes/ppa/ubuntu ${VERSION_CODENAME} main" \
        > /etc/apt/sources.list.d/deadsnakes.list \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libgl1 libglib2.0-0 libegl1 libgl1-mesa-dri libegl-mesa0 \
        bash curl wget procps git git-lfs rsync \
        python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

# GPU rendering. The mesh renderer opens a headless EGL context through moderngl/glcontext (backend
# "egl": libEGL.so.1 of glvnd, first EGL device); PyOpenGL is not used, so PYOPENGL_PLATFORM does not
# matter. The NVIDIA runtime mounts the driver's libEGL_nvidia.so.0 only with the "graphics" capability,
# and glvnd loads it only if a vendor file names it; without both, EGL falls back to Mesa's llvmpipe (CPU).
RUN install -d -m 0755 /usr/share/glvnd/egl_vendor.d \
    && printf '%s\n' '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}' \
        > /usr/share/glvnd/egl_vendor.d/10_nvidia.json

# Spaces run the container as uid 1000; Dev Mode wants the code in /app, owned by that user. /data is
# the Space's persistent storage (mounted at run time, hiding what is made here: the entrypoint creates
# its sub-folders again).
RUN useradd --create-home --uid 1000 --shell /bin/bash user \
    && install -d -o user -g user /app /opt/venv /data

ENV HOME=/home/user \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BODY4D_HOST=0.0.0.0 \
    BODY4D_PORT=7860 \
    BODY4D_CKPT_ROOT=/data/checkpoints \
    BODY4D_OUTPUT_DIR=/data/outputs \
    HF_HOME=/data/.huggingface \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics

USER user
WORKDIR /app

# A virtual environment owned by the user, so Dev Mode sessions can pip install into it too.
RUN python3.11 -m venv /opt/venv \
    && python -c 'import sys; v = sys.version_info; assert v[:2] == (3, 11) and v.releaselevel == "final", sys.version; print(sys.version)'

# Dependencies first (cached while only the source changes). pyproject.toml is the one list: a stub of the
# two packages lets `pip install .` resolve and install all of its pinned dependencies here; the real
# source replaces the stub below.
COPY --chown=user:user pyproject.toml README.md /tmp/body4d-deps/

# TORCH_CUDA: torch/torchvision of that flavour from the PyTorch index first, at the versions pinned in
# pyproject.toml (read here, never retyped); `pip install .` then keeps them (2.14.1+cu128 satisfies
# ==2.14.1).
RUN if [ -n "$TORCH_CUDA" ]; then \
        cd /tmp/body4d-deps \
        && pins="$(python -c 'import re, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; pins = [d for d in deps if re.split(r"[^A-Za-z0-9_.-]", d, maxsplit=1)[0].lower() in ("torch", "torchvision")]; assert len(pins) == 2 and all("==" in p for p in pins), pins; print(" ".join(pins))')" \
        && echo "PyTorch flavour ${TORCH_CUDA}: ${pins}" \
        && pip install --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" ${pins}; \
    fi

RUN cd /tmp/body4d-deps \
    && mkdir body4d models \
    && touch body4d/__init__.py models/__init__.py \
    && pip install . \
    && cd / \
    && rm -rf /tmp/body4d-deps \
    && python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'

# The code and what the app reads at run time (the shipped example clip is in assets/examples).
COPY --chown=user:user app.py pyproject.toml README.md LICENSE-SAM /app/
COPY --chown=user:user body4d /app/body4d
COPY --chown=user:user models /app/models
COPY --chown=user:user scripts /app/scripts
COPY --chown=user:user assets /app/assets

# The real package over the stub (its dependencies are all in place already), editable: `python app.py`
# and the `body4d` command both run the code in /app, where Dev Mode edits it.
RUN chmod 0755 scripts/space_start.sh \
    && pip install --no-deps --editable .

EXPOSE 7860
ENTRYPOINT ["/app/scripts/space_start.sh"]
# The same command as `make run`.
CMD ["python", "app.py"]
