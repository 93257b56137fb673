# The emodistill image: Ray (CUDA, Python 3.11) with the project installed and the
# repository at /app. Every Ray container of k8s/ runs this one image (another registry or
# tag: `images:` in k8s/overlays/<overlay>/kustomization.yaml):
#
#   docker build -t ghcr.io/emodistill/emodistill:0.1.0 .
#   docker push ghcr.io/emodistill/emodistill:0.1.0
#
# The tag is the project version of pyproject.toml, the base image's Ray version is the
# ray pin of constraints.txt and the rayVersion of the manifests; tests/k8s checks that all
# of these agree. Building needs the package registries (PyPI, the PyTorch wheel index).
FROM rayproject/ray:2.60.0-py311-gpu

LABEL org.opencontainers.image.title="emodistill" \
      org.opencontainers.image.description="Speech emotion recognition with self-distillation, on Ray" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.ref.name="ghcr.io/emodistill/emodistill:0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

# torch first, in its own layer (a few GB, rebuilt only when the version changes), as the
# CUDA build of the version constraints.txt pins. That pin (torch==2.13.0) resolves to the
# CPU wheel on the development and CI machines; here the same version comes from the
# PyTorch index of one CUDA release. The wheel brings its own CUDA runtime libraries (it
# needs an NVIDIA driver that supports TORCH_CUDA on the nodes). In the next step the
# constraint torch==2.13.0 is already met by 2.13.0+cu128 (a local version label matches),
# so pip keeps this build instead of replacing it.
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
RUN pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
        "torch==${TORCH_VERSION}" \
 && python -c "import torch; assert torch.version.cuda, 'expected a CUDA build of torch'"

# The project with every extra (train, tune, serve: the image runs all of them), owned by the image's `ray` user (pip builds in the source tree). The Ray
# containers run with workingDir /app, so job entrypoints such as
# `python jobs/train.py --config jobs/configs/...` resolve against the repository.
COPY --chown=ray:users . /app
WORKDIR /app
RUN pip install --no-cache-dir -c constraints.txt ".[all]" \
 && rm -rf build platform/*.egg-info \
 && python -c "import emodistill, torch; print('emodistill', emodistill.__file__, 'torch', torch.__version__)"
