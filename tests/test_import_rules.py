"""The layering rule of DEVELOPERS.md, checked by walking every module's imports.

servable <- sources <- loaders <- manager <- server <- batch <- integrations; protos may be
used by any layer (batch inference and the Ray integration sit on top of the server layer).
The core (servable, sources, manager) imports no TensorFlow, gRPC or HTTP library, and
`import pyserving` loads neither TensorFlow nor gRPC.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyserving"
LAYERS = ["servable", "sources", "loaders", "manager", "server", "batch", "integrations"]
#: Layers that form one level: batch inference offers `--ray` by calling the Ray integration
#: (lazily), and the integration loads models through batch's runners.
SAME_LEVEL = {"integrations": {"batch"}, "batch": {"integrations"}}
CORE = {"servable", "sources", "manager"}
FORBIDDEN_IN_CORE = ("tensorflow", "tensorflow_serving", "grpc", "uvicorn", "httptools", "orjson", "requests", "http")


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "pyserving" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + "." + "__init__"
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                names.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.append(node.module)
    return names


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layer_direction(path: Path) -> None:
    own = path.relative_to(PACKAGE).parts[0] if len(path.relative_to(PACKAGE).parts) > 1 else None
    if own not in LAYERS:
        return  # top-level modules (__init__, cli, testing) may use any layer
    allowed = set(LAYERS[: LAYERS.index(own) + 1]) | {"protos", "_version"} | SAME_LEVEL.get(own, set())
    for name in _imports(path):
        layer = _layer_of(name)
        if layer is not None and layer in LAYERS + ["protos"]:
            assert layer in allowed, f"{path.relative_to(PACKAGE)} imports {name}: {own} may not depend on {layer}"
        if own in CORE:
            top = name.split(".")[0]
            assert top not in FORBIDDEN_IN_CORE, f"core module {path.relative_to(PACKAGE)} imports {name}"


def test_import_pyserving_is_light_and_fast() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import pyserving; dt = time.perf_counter() - t;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'grpc', 'tensorflow_serving', 'watchdog',"
        " 'pyarrow', 'ray', 'prometheus_client', 'opentelemetry', 'uvicorn'));"
        "print(repr((dt, bad)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    elapsed, heavy = eval(out)
    assert heavy == [], f"import pyserving pulled in {heavy}"
    print(f"import pyserving took {elapsed * 1000:.1f} ms")  # measured, not asserted: see benchmarks/
