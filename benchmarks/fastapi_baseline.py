"""The course's baseline server: FastAPI + uvicorn, 2 worker processes, one SavedModel call per request.

This is the server a Python ML-deployment course teaches, written the way it teaches it, so
``benchmarks/run.py`` can put pyserving next to it on the same machine, models and load:

* a pydantic request model (``{"instances": [[...], ...]}``, every value validated as a float);
* a plain ``def`` endpoint (FastAPI runs it in its thread pool, the documented way for
  blocking code such as a model call);
* each worker process loads every model once at startup with ``tf.saved_model.load`` and
  calls its ``serving_default`` signature function; answers ``{"predictions": [...]}``;
* 2 uvicorn worker processes (default settings: httptools parser, asyncio loop), each
  holding its own copy of the models.

Two fixes a course would not show, so that the baseline measures FastAPI and not an
accident of the deployment:

* Balanced workers. ``uvicorn --workers 2`` shares one listening socket, and an asyncio
  worker that wakes first accepts every connection waiting (up to 100 at once): when a load
  generator opens its 8 or 32 connections together, one worker often gets all of them and
  the other idles, so the same run gives ~1,700 or ~3,900 requests/s by chance. Each
  worker therefore binds its own socket with SO_REUSEPORT (what ``gunicorn --reuse-port``
  does) and the kernel spreads connections over the two. ``--shared-socket`` runs plain
  ``uvicorn --workers`` instead.
* TCP_NODELAY. With ``--workers`` uvicorn binds its socket as ``socket.socket(family)``
  (protocol number 0) and asyncio only sets TCP_NODELAY on sockets whose protocol reads
  IPPROTO_TCP. Every answer (headers and body are two writes) then waits for Nagle + the
  client's delayed ACK: about 22 requests/s and a 44 ms p50 at one client. The workers'
  own sockets are created with IPPROTO_TCP, and for ``--shared-socket`` each worker makes
  asyncio set TCP_NODELAY on every TCP connection (``_nodelay_for_all_tcp_sockets``;
  ``BENCH_UVICORN_NAGLE=1`` leaves uvicorn as it is, to see the difference).

Routes: ``POST /v1/models/{name}:predict`` (TF Serving's path, so one load script serves
both servers) and ``POST /predict`` (the first model). No batching, no gRPC, no version
management: the baseline, not a competitor.

Usage (``run.py`` starts it this way)::

    python benchmarks/fastapi_baseline.py --port 8000 --workers 2 \\
        --model tiny=/tmp/models/tiny/1 --model mlp=/tmp/models/mlp/1

The models travel to the workers in the ``BENCH_MODELS`` environment variable
(``name=path,name=path``; each path is a SavedModel directory). Each worker logs
"Application startup complete." once its models are loaded. Stop it with SIGTERM / SIGINT
(to the process group, or to the parent, which then stops its workers).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

MODELS_ENV = "BENCH_MODELS"


class PredictRequest(BaseModel):
    instances: list[list[float]]


class _Model:
    """One loaded SavedModel: its signature function and the name of its one input."""

    def __init__(self, path: str) -> None:
        import tensorflow as tf

        self._tf = tf
        self.loaded = tf.saved_model.load(path)  # keeps the variables alive
        self.signature = self.loaded.signatures["serving_default"]
        _, keyword_inputs = self.signature.structured_input_signature
        self.input_name = next(iter(keyword_inputs))

    def predict(self, instances: list[list[float]]) -> list[Any]:
        x = self._tf.constant(np.asarray(instances, dtype=np.float32))
        outputs = self.signature(**{self.input_name: x})
        return next(iter(outputs.values())).numpy().tolist()


_models: dict[str, _Model] = {}


def _nodelay_for_all_tcp_sockets() -> None:
    """Make asyncio set TCP_NODELAY on TCP sockets whatever protocol number they report."""
    import asyncio.base_events
    import socket

    def set_nodelay(sock: socket.socket) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    asyncio.base_events._set_nodelay = set_nodelay  # type: ignore[attr-defined]  # read at each accept


if os.environ.get("BENCH_UVICORN_NAGLE") != "1":
    _nodelay_for_all_tcp_sockets()


def _model_paths() -> dict[str, str]:
    spec = os.environ.get(MODELS_ENV, "")
    pairs = [item.split("=", 1) for item in spec.split(",") if item]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"{MODELS_ENV} must be name=path[,name=path...], got {spec!r}")
    return {name: path for name, path in pairs}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name, path in _model_paths().items():
        _models[name] = _Model(path)
    yield
    _models.clear()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/models/{name}:predict")
def predict(name: str, request: PredictRequest) -> dict[str, Any]:
    model = _models.get(name)
    if model is None:
        raise HTTPException(status_code=404, detail=f"no model named {name!r}")
    return {"predictions": model.predict(request.instances)}


@app.post("/predict")
def predict_default(request: PredictRequest) -> dict[str, Any]:
    return {"predictions": next(iter(_models.values())).predict(request.instances)}


def _serve_one(host: str, port: int) -> None:
    """One worker process: its own SO_REUSEPORT socket, then uvicorn on it until a signal."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=False)).run(sockets=[sock])


def _serve_reuseport(host: str, port: int, workers: int) -> None:
    import multiprocessing
    import signal

    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_serve_one, args=(host, port)) for _ in range(workers)]
    for process in processes:
        process.start()

    def stop(signum: int, _frame: object) -> None:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for process in processes:
        process.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shared-socket", action="store_true",
                        help="plain `uvicorn --workers` (one shared socket) instead of one SO_REUSEPORT socket per worker")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=SAVED_MODEL_DIR")
    args = parser.parse_args(argv)
    for item in args.model:
        if "=" not in item:
            parser.error(f"--model must be NAME=SAVED_MODEL_DIR, got {item!r}")
    os.environ[MODELS_ENV] = ",".join(args.model)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.shared_socket:
        _serve_reuseport(args.host, args.port, args.workers)
        return

    import uvicorn

    uvicorn.run(
        "fastapi_baseline:app", app_dir=str(Path(__file__).resolve().parent),
        host=args.host, port=args.port, workers=args.workers, log_level="info", access_log=False,
    )


if __name__ == "__main__":
    sys.exit(main())
