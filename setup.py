"""Packaging for pyserving. Runtime dependencies are TF Serving's wire formats and our servers."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version: dict[str, str] = {}
exec((ROOT / "pyserving" / "_version.py").read_text(), version)

setup(
    name="pyserving",
    version=version["__version__"],
    description="TensorFlow-Serving-style model serving in Python: drop-in gRPC/REST APIs, live version updates.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pyserving", "pyserving.*"]),
    include_package_data=True,
    package_data={"pyserving": ["data/**/*", "py.typed"]},
    install_requires=[
        "tensorflow>=2.15,<3",
        "tensorflow-serving-api>=2.15,<3",
        "numpy>=1.24",
        "grpcio>=1.60",
        "grpcio-health-checking>=1.60",
        "protobuf>=4.21",
        "watchdog>=4.0",
        "uvicorn>=0.30",
        "httptools>=0.6",
        "orjson>=3.9",
        # the REST server's event loop: 1.1-1.2x the requests/s of asyncio's (benchmarks/); no Windows build
        "uvloop>=0.19; sys_platform != 'win32'",
        # --monitoring_config_file: the Prometheus registry and text format (imported only when monitoring is on)
        "prometheus-client>=0.17",
    ],
    extras_require={
        # cryptography: the TLS tests generate their own CA, server and client certificates
        # opentelemetry-sdk and -exporter-otlp: the tracing tests (in-memory exporter; OTEL_* configuration)
        # pyarrow + tqdm + ray: pyserving batch (the batch and ray extras) is tested too
        "test": [
            "pytest>=8", "pytest-timeout>=2.2", "requests>=2.31", "cryptography>=42",
            "opentelemetry-sdk>=1.20", "opentelemetry-exporter-otlp>=1.20",
            "pyarrow>=14", "tqdm>=4.60", "ray[data]>=2.60",
        ],
        # pyserving batch: columnar input and output streamed in record batches (Parquet, CSV, JSON Lines), progress bar
        "batch": ["pyarrow>=14", "tqdm>=4.60"],
        # pyserving batch --ray and pyserving.integrations.ray.Predictor: Ray Data (tested with 2.60)
        "ray": ["ray[data]>=2.60", "pyarrow>=14", "tqdm>=4.60"],
        # --enable_tracing: OpenTelemetry's SDK and OTLP exporters (grpc and http/protobuf)
        "otel": ["opentelemetry-api>=1.20", "opentelemetry-sdk>=1.20", "opentelemetry-exporter-otlp>=1.20"],
        # benchmarks/run.py: the course-style FastAPI baseline, and py-spy for the request-path profile
        "bench": ["fastapi>=0.110", "py-spy>=0.3.14"],
    },
    entry_points={
        "console_scripts": [
            "pyserving=pyserving.cli:main",
            "pyserving-model-server=pyserving.server.main:main",
            "pyserving-container-entrypoint=pyserving.server.container:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
