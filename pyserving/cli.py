"""``pyserving``: the command for people who never used TF Serving.

    pyserving serve [PATH ...]     serve each folder as a model named after it; with no
                                   PATH, the bundled demo model half_plus_two
    pyserving batch MODEL_PATH --input FILE --output FILE
                                   score a whole dataset offline (pyserving.batch)
    pyserving --help               the three ways to use pyserving

A PATH is a base path holding numbered version folders (``1/``, ``2/`` ...) — which is
watched, so a new version dropped in takes over — or a single model folder (a SavedModel
or a folder with ``model.py``), served as version 1.

Ctrl-C or SIGTERM shuts down gracefully: the server reports not ready, stops accepting
requests, gives the requests in flight ``--shutdown_grace_seconds`` (default 5) to finish,
unloads the models and exits 0. A second Ctrl-C / SIGTERM exits at once with status
128 + the signal number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "DEMO_MODEL_PATH", "model_entry_for_path"]

DEMO_MODEL_PATH = Path(__file__).resolve().parent / "data" / "half_plus_two"
DEMO_CURL = (
    "curl -d '{{\"instances\": [1.0, 2.0, 5.0]}}' http://localhost:{port}/v1/models/half_plus_two:predict"
)

DESCRIPTION = """\
pyserving serves machine-learning models over TF Serving's gRPC and REST APIs.

Three ways to use it:
  1. As a server for a folder you watch:  pyserving serve /models/my_model
     Drop a new numbered version folder (/models/my_model/2) in and it takes over
     without a failed request; a broken version never replaces a good one.
  2. As a drop-in for tensorflow_model_server:  pyserving-model-server --port=8500
     --rest_api_port=8501 --model_name=my_model --model_base_path=/models/my_model
     (every TF Serving flag parses; see pyserving-model-server --help).
  3. As a library:  from pyserving import FileSystemSource, AspiredVersionsManager, ...
     build your own source -> adapter -> manager pipeline, with Python servables
     (a model.py with create_servable) or SavedModels.

With no PATH, 'pyserving serve' serves the bundled demo model half_plus_two (y = 0.5 x + 2).
"""


def _platform_of(model_dir: Path) -> str | None:
    from pyserving.loaders.platform import detect_platform

    return detect_platform(model_dir)


def _numbered_children(path: Path) -> list[Path]:
    children = [c for c in path.iterdir() if c.is_dir() and c.name.isdigit()]
    return sorted(children, key=lambda c: int(c.name))


def model_entry_for_path(path: Path, links_dir: Path):  # -> ModelEntry
    """The model a PATH means (see the module docstring). Raises ValueError when none."""
    from pyserving.server.model_config import ModelEntry

    path = path.resolve()
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder")
    name = path.name
    platform = _platform_of(path)
    if platform is not None:
        base = links_dir / name
        base.mkdir(parents=True, exist_ok=True)
        link = base / "1"
        if not link.exists():
            link.symlink_to(path, target_is_directory=True)
        return ModelEntry(name=name, base_path=str(base), platform=platform)
    versions = _numbered_children(path)
    if not versions:
        raise ValueError(
            f"no model found at {path}: expected numbered version folders (1/, 2/, ...) "
            "or a model folder (saved_model.pb, or model.py with create_servable)"
        )
    platform = _platform_of(versions[-1]) or _platform_of(versions[0])
    if platform is None:
        raise ValueError(f"{versions[-1]} holds neither saved_model.pb nor model.py")
    return ModelEntry(name=name, base_path=str(path), platform=platform)


def _serve(args: argparse.Namespace) -> int:
    from pyserving.server.core import ServerCoreOptions
    from pyserving.server.main import quiet_tensorflow_startup, run_until_signalled
    from pyserving.server.model_server import ModelServer, ModelServerSettings

    quiet_tensorflow_startup()
    logging.basicConfig(
        level=os.environ.get("PYSERVING_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
    )
    paths = [Path(p) for p in args.paths] or [DEMO_MODEL_PATH]
    links = Path(tempfile.mkdtemp(prefix="pyserving-serve-"))
    try:
        models = [model_entry_for_path(p, links) for p in paths]
    except (ValueError, OSError) as exc:
        print(f"pyserving serve: {exc}", file=sys.stderr)
        return 1
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        print(f"pyserving serve: two paths give the model name {duplicates[0]!r}; rename one folder", file=sys.stderr)
        return 1
    settings = ModelServerSettings(
        grpc_host=args.host,
        rest_host=args.host,
        grpc_port=args.port,
        rest_port=args.rest_api_port,
        shutdown_grace_s=args.shutdown_grace_seconds,
        core=ServerCoreOptions(file_system_poll_wait_seconds=args.file_system_poll_wait_seconds),
    )
    server = ModelServer(settings, models)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - reported for the user, exit 1
        print(f"pyserving serve: could not start: {exc}", file=sys.stderr)
        return 1
    print("pyserving is serving:")
    for m in models:
        print(f"  {m.name:<20} {m.platform:<11} {m.base_path}")
    if server.grpc_port:
        print(f"gRPC  localhost:{server.grpc_port}  (tensorflow.serving.PredictionService, ModelService)")
    if server.rest_port:
        print(f"REST  http://localhost:{server.rest_port}/v1/models/{models[0].name}")
        if models[0].name == "half_plus_two":
            print("Try:  " + DEMO_CURL.format(port=server.rest_port))
        else:
            print(f"Try:  curl http://localhost:{server.rest_port}/v1/models/{models[0].name}/metadata")
    print("Press Ctrl-C to stop.", flush=True)
    run_until_signalled(server)
    return 0


BATCH_DESCRIPTION = """\
Score a whole dataset with a model, offline: pyserving batch MODEL_PATH --input data.parquet
--output scores.parquet.

MODEL_PATH is a base path with numbered versions (the latest is used; --version N picks one)
or one model folder (a SavedModel, or model.py); with --server it is the model's name there.
Inputs: Parquet (a file or a folder of them), CSV, JSON Lines, NumPy .npy, TFRecord of
tf.Example (for classify/regress signatures); the format comes from the file name or
--input-format. Output: Parquet or JSON Lines, a file (.parquet, .jsonl) or a folder of parts
(a name ending in / or without extension): the id column (--id-column, from the input when it
has one, else the row number), then one column per signature output, rows in input order.
Bad rows (wrong shape or type, unparseable) go to OUTPUT.errors.jsonl with their id and
reason, and do not stop the job unless --fail-fast.

The output is written in chunks with a manifest: after a crash or Ctrl-C, the same command
with --resume continues after the last complete chunk. Exit status: 0 done (even with bad
rows), 1 failed, 130 interrupted (resumable).
"""


def _batch(args: argparse.Namespace) -> int:
    from pyserving.server.main import quiet_tensorflow_startup

    quiet_tensorflow_startup()
    logging.basicConfig(
        level=os.environ.get("PYSERVING_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
    )
    from pyserving.batch import BadRowError, BatchOptions, require_pyarrow, run
    from pyserving.servable.errors import ServingError

    try:
        if not args.ray:
            require_pyarrow()
        options = BatchOptions(
            model_path=args.model_path, input=args.input, output=args.output, signature=args.signature,
            version=args.model_version, label=args.label, batch_size=args.batch_size, chunk_rows=args.chunk_rows,
            columns=args.columns, id_column=args.id_column, resume=args.resume, overwrite=args.overwrite,
            fail_fast=args.fail_fast, server=args.server, ray=args.ray or args.ray_address is not None,
            ray_address=args.ray_address, input_format=args.input_format, output_format=args.output_format,
            model_config=args.model_config,
        )
        summary = run(options)
    except BadRowError as exc:
        print(f"pyserving batch: stopped by --fail-fast: {exc}", file=sys.stderr)
        return 1
    except ServingError as exc:
        print(f"pyserving batch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pyserving batch: interrupted; the chunks written are kept: rerun with --resume", file=sys.stderr)
        return 130
    print(summary.describe())
    if summary.interrupted:
        print("Interrupted: rerun the same command with --resume to continue.", file=sys.stderr)
        return 130
    return 0


def _add_batch_parser(commands: Any) -> None:
    batch = commands.add_parser(
        "batch", help="score a dataset file offline with a model (Parquet, CSV, JSON Lines, .npy, TFRecord)",
        description=BATCH_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("model_path", metavar="MODEL_PATH", help="model base path or folder (with --server: name)")
    batch.add_argument("--input", required=True, help="input file (or folder of Parquet files)")
    batch.add_argument("--output", required=True, help="output file (.parquet, .jsonl) or folder (name/)")
    batch.add_argument("--signature", help="signature name (default serving_default, or the only one)")
    which = batch.add_mutually_exclusive_group()
    which.add_argument("--version", dest="model_version", type=int, metavar="N", help="model version (default: latest)")
    which.add_argument("--label", metavar="L", help="version label; locally it needs --model-config")
    batch.add_argument("--model-config", metavar="FILE",
                       help="ModelServerConfig text file whose version_labels give --label")
    batch.add_argument("--batch-size", type=int, metavar="N",
                       help="rows per model call (default: the model's preferred size, else the fastest of 256/512/1024/2048 measured at start)")
    batch.add_argument("--chunk-rows", type=int, metavar="N",
                       help="rows per output chunk, the unit --resume restarts from (default 8192)")
    batch.add_argument("--columns", metavar="SPEC",
                       help="input columns for the signature inputs: COLUMN (one input) or INPUT=COLUMN,... "
                       "(default: by name)")
    batch.add_argument("--id-column", default="id", metavar="NAME", help="id column (default id)")
    batch.add_argument("--resume", action="store_true", help="continue an interrupted job after its last chunk")
    batch.add_argument("--overwrite", action="store_true", help="replace an existing output")
    batch.add_argument("--fail-fast", action="store_true", help="stop at the first bad row (exit 1, naming it)")
    batch.add_argument("--server", metavar="URL",
                       help="score on a running server: grpc://host:8500 or http://host:8501")
    batch.add_argument("--ray", action="store_true", help="run the job on Ray Data (pip install 'pyserving[ray]')")
    batch.add_argument("--ray-address", metavar="ADDR", help="Ray cluster address (implies --ray)")
    batch.add_argument("--input-format", choices=("parquet", "csv", "jsonl", "npy", "tfrecord"),
                       help="input format (default: from the file name)")
    batch.add_argument("--output-format", choices=("parquet", "jsonl"),
                       help="output format (default: from the file name; parquet for a folder)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyserving", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve model folders (the demo model when none is given)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("paths", nargs="*", metavar="PATH", help="model base path or model folder")
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    serve.add_argument(
        "--host", default=os.environ.get("PYSERVING_HOST", "0.0.0.0"),
        help="address to listen on (default 0.0.0.0, or $PYSERVING_HOST)",
    )
    serve.add_argument("--rest_api_port", type=int, default=8501, help="REST port; 0 turns REST off (default 8501)")
    serve.add_argument(
        "--file_system_poll_wait_seconds", type=float, default=1.0,
        help="seconds between folder polls; new versions are also seen at once through file events (default 1)",
    )
    serve.add_argument(
        "--shutdown_grace_seconds", type=float, default=5.0,
        help="on Ctrl-C or SIGTERM, seconds requests in flight get to finish before the models are unloaded "
        "(default 5); a second Ctrl-C exits at once",
    )
    _add_batch_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from pyserving.server.flags import version_text

        print(version_text())
        return 0
    if args.command == "serve":
        if not 0 < args.port < 65536:
            parser.error(f"--port must be in 1..65535, got {args.port}")
        if not 0 <= args.rest_api_port < 65536:
            parser.error(f"--rest_api_port must be in 0..65535, got {args.rest_api_port}")
        if not 0 <= args.shutdown_grace_seconds < float("inf"):
            parser.error(f"--shutdown_grace_seconds must be a number >= 0, got {args.shutdown_grace_seconds}")
        return _serve(args)
    if args.command == "batch":
        return _batch(args)
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
