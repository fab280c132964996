# The image helm/sync-scorer runs: the package with the bundled model, ffmpeg and espeak-ng.
#   docker build -t sync-scorer:0.1.0 .
# torch==2.11.0 from PyPI is the CUDA build: the same image runs on GPU nodes (the scorer picks
# CUDA itself) and on CPU nodes.
FROM python:3.11-slim-bookworm

# runtime Debian packages of scripts/install_system_deps.sh (Java and Maven are only for the
# local test broker): ffmpeg for media decode, espeak-ng for synthetic speech, libGL/glib for
# OpenCV inside mediapipe
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ffmpeg espeak-ng libespeak-ng1 libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY schemas ./schemas
COPY model_store ./model_store
RUN pip install --no-cache-dir '.[stream,media]' \
 && useradd --create-home --uid 10001 scorer

USER 10001
ENV PYTHONUNBUFFERED=1
# the worker's metrics/health port, serve's HTTP and gRPC ports
EXPOSE 9108 8080 50051
ENTRYPOINT ["sync-scorer"]
CMD ["worker"]
