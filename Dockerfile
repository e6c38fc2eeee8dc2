# physiofm: the package and its CLI on a slim Python base, run as a non-root user.
#   docker build -t physiofm .                                              # CPU torch
#   docker build -t physiofm:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   docker run --rm -v "$PWD:/data" physiofm build ecg /data/raw /data/store
#   docker run --rm --entrypoint dask physiofm worker tcp://SCHEDULER:8786    # a Dask build worker
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
# Which torch build: the CPU wheels by default, a CUDA index for GPU images.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="{'MALLOC_TRIM_THRESHOLD_': 134217728, 'MALLOC_MMAP_THRESHOLD_': 33554432}"

RUN useradd --create-home --uid 10001 physiofm

WORKDIR /opt/physiofm
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY manifests ./manifests
COPY physiofm ./physiofm
RUN pip install "./[dask]" && physiofm --help > /dev/null

USER 10001
WORKDIR /home/physiofm
ENTRYPOINT ["physiofm"]
CMD ["--help"]
