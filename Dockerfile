# fmri-pain container: a BIDS App.
#   docker build -t fmri-pain:0.1.0 .
#   podman build --build-arg BASE_IMAGE=localhost/debian-base:bookworm ...   (see .ci/container.sh)
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out fmri-pain:0.1.0 /data /out participant
#   apptainer build fmri-pain.sif docker-daemon://fmri-pain:0.1.0
#
# The base image is pinned by tag. For a bit-for-bit reproducible build, pin the
# digest as well (`docker pull python:3.11.11-slim-bookworm` then use
# `FROM python:3.11.11-slim-bookworm@sha256:<digest>`); the tag is kept here so
# security updates of the tag are picked up on rebuilds.
# BASE_IMAGE may be any Debian bookworm image with python3 and python3-venv:
# .ci/container.sh builds one with debootstrap where no registry is reachable.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="fmri-pain" \
      org.opencontainers.image.description="fMRI analysis of a SCS / DRGS / DUAL crossover trial in neuropathic pain (BIDS App)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/fmri-pain/fmri-pain"

# Writable caches for a read-only image (apptainer runs it as the calling user);
# LOGNAME is read by nipype's SLURM plugin; one BLAS thread per dask worker.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba \
    LOGNAME=fmripain \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /opt/fmri-pain
COPY pyproject.toml README.md ./
COPY fmri_pain ./fmri_pain
COPY atlases ./atlases
COPY pipelines ./pipelines
# A venv, not the system site-packages: Debian's python3 refuses pip installs
# there (PEP 668); the python image works the same way with it.
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir "./[hpc]" \
    && useradd --create-home --uid 1000 --shell /bin/bash fmripain \
    && fmri-pain --version

# numeric UID:GID so hosts and Kubernetes can check it is not root
USER 1000:1000
WORKDIR /home/fmripain

# BIDS-App convention: IMAGE BIDS_DIR OUTPUT_DIR {participant,group} [options]
ENTRYPOINT ["fmri-pain"]
CMD ["--help"]
