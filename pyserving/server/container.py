"""The container image's entrypoint: ``pyserving-container-entrypoint`` (or ``python -m
pyserving.server.container``), TF Serving's ``tf_serving_entrypoint.sh`` in Python.

It runs ``pyserving-model-server`` with::

    --port=8500 --rest_api_port=8501 --model_name=$MODEL_NAME
    --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME  <the container's arguments>

(:func:`pyserving.server.flags.docker_argv`). ``MODEL_NAME`` defaults to ``model``,
``MODEL_BASE_PATH`` to ``/models``. The container's own arguments come last and win, since
the last occurrence of a flag wins: ``docker run ... pyserving --rest_api_port=9000`` or
``--model_config_file=/models/models.config`` (which makes ``--model_base_path`` unused).

The server runs in this process, not a child: it is the container's main process (PID 1),
so ``docker stop`` / Kubernetes' SIGTERM reaches its graceful shutdown directly, as after
TF Serving's ``exec``. The exit status is the server's (see :mod:`pyserving.server.main`).
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

from pyserving.server.flags import docker_argv

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Serve as the container's entrypoint; returns the server's exit status.
    ``argv``: the container's arguments (default ``sys.argv[1:]``); ``environ``: default
    ``os.environ``."""
    from pyserving.server.main import main as server_main

    extra = sys.argv[1:] if argv is None else argv
    return server_main(docker_argv(os.environ if environ is None else environ, extra))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
