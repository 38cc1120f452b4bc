# pyserving: a TensorFlow-Serving-style model server, as a container image.
#
#   docker build -t pyserving .
#   docker run -p 8500:8500 -p 8501:8501 -v "$PWD/models/half:/models/half:ro" -e MODEL_NAME=half pyserving
#
# Like TF Serving's image: serves ${MODEL_BASE_PATH}/${MODEL_NAME} (numbered version folders)
# with gRPC on 8500 and REST on 8501; arguments after the image name are passed to
# pyserving-model-server and win over the defaults (e.g. --model_config_file=/models/models.config,
# --log_format=json, --enable_access_log). The entrypoint is pyserving/server/container.py.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the package (and TensorFlow, gRPC, ...) from this checkout; the sources are not kept.
COPY . /tmp/pyserving-src
RUN pip install /tmp/pyserving-src \
    && rm -rf /tmp/pyserving-src

# An unprivileged user with a fixed id (Kubernetes' runAsNonRoot checks the numeric USER).
RUN groupadd --system --gid 10001 serving \
    && useradd --system --uid 10001 --gid serving --home-dir /home/serving --create-home \
       --shell /usr/sbin/nologin serving \
    && mkdir -p /models \
    && chown serving:serving /models

ENV MODEL_NAME=model \
    MODEL_BASE_PATH=/models
VOLUME ["/models"]
EXPOSE 8500 8501

USER 10001:10001
WORKDIR /home/serving

# Ready = every model has an AVAILABLE version (503 while loading or shutting down).
# No curl in slim images: Python's urllib (a non-2xx answer or no answer exits non-zero).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/v1/health/ready', timeout=4)"]

ENTRYPOINT ["pyserving-container-entrypoint"]
CMD []
