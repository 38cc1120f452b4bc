"""The "python" platform: real version directories with real model.py files."""

from __future__ import annotations

import gc
import sys
import textwrap
import threading
import weakref
from pathlib import Path

import pytest

from pyserving.loaders.platform import get_platform
from pyserving.loaders.python_platform import PYTHON_PLATFORM, PythonModelLoader, is_version_ready
from pyserving.servable.errors import (
    Code,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
)
from pyserving.servable.ids import ServableId
from pyserving.sources.storage_path import StoragePath

ADDER = """
    from __future__ import annotations

    from dataclasses import dataclass
    from pathlib import Path

    CLOSED = []


    @dataclass
    class Adder:
        offset: int

        def __call__(self, x: int) -> int:
            return x + self.offset

        def close(self) -> None:
            CLOSED.append(self.offset)


    def create_servable(version_dir: Path) -> Adder:
        return Adder(int((version_dir / "offset.txt").read_text()))
"""


def write_version(base: Path, version: int, model_py: str, **files: str) -> Path:
    version_dir = base / str(version)
    version_dir.mkdir(parents=True)
    (version_dir / "model.py").write_text(textwrap.dedent(model_py))
    for name, text in files.items():
        path = version_dir / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return version_dir


def make_loader(version_dir: Path, name: str = "m", revision: str | None = "r1") -> PythonModelLoader:
    return PythonModelLoader(
        ServableId(name, int(version_dir.name)), StoragePath(str(version_dir), revision), {}
    )


def model_modules() -> set[str]:
    return {name for name in sys.modules if name.startswith("_pyserving_model_")}


def test_load_serve_and_unload_calls_close(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path, 1, ADDER, **{"offset.txt": "10"})
    loader = make_loader(version_dir)
    assert loader.servable is None
    assert loader.revision == "r1"

    loader.load()
    adder = loader.servable
    assert adder(5) == 15
    module = sys.modules[type(adder).__module__]
    assert module.__file__ == str(version_dir / "model.py")

    loader.unload()
    assert module.CLOSED == [10]
    assert loader.servable is None
    assert type(adder).__module__ not in sys.modules


def test_platform_is_registered_and_checks_readiness(tmp_path: Path) -> None:
    assert get_platform("python") is PYTHON_PLATFORM
    version_dir = tmp_path / "1"
    version_dir.mkdir()
    assert not is_version_ready(version_dir)
    (version_dir / "model.py").write_text("def create_servable(d):\n    return object()\n")
    assert PYTHON_PLATFORM.is_version_ready(version_dir)
    loader = PYTHON_PLATFORM.create_loader(ServableId("m", 1), StoragePath(str(version_dir)), {})
    assert isinstance(loader, PythonModelLoader)


def test_relative_imports_and_no_bytecode_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # Python's default, whatever the environment says
    version_dir = write_version(
        tmp_path,
        3,
        """
        from . import helper
        from .pkg.deep import triple

        def create_servable(version_dir):
            return lambda x: triple(helper.double(x))
        """,
        **{
            "helper.py": "def double(x):\n    return 2 * x\n",
            "pkg__deep.py": "def triple(x):\n    return 3 * x\n",
        },
    )
    before = sorted(p.relative_to(version_dir) for p in version_dir.rglob("*"))
    loader = make_loader(version_dir)
    loader.load()
    assert loader.servable(1) == 6
    root = loader.servable.__module__
    assert {root, f"{root}.helper", f"{root}.pkg", f"{root}.pkg.deep"} <= set(sys.modules)
    loader.unload()
    assert not any(name == root or name.startswith(root + ".") for name in sys.modules)
    assert sorted(p.relative_to(version_dir) for p in version_dir.rglob("*")) == before


def test_estimate_defaults_to_directory_size(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path, 1, ADDER, **{"offset.txt": "7", "weights.bin": "x" * 1000})
    expected = sum(p.stat().st_size for p in version_dir.rglob("*") if p.is_file())
    loader = make_loader(version_dir)
    assert loader.estimate_resources().ram_bytes == expected
    loader.load()
    assert loader.estimate_resources().ram_bytes == expected
    loader.unload()


def test_estimate_from_model_function(tmp_path: Path) -> None:
    version_dir = write_version(
        tmp_path,
        1,
        """
        IMPORTS = []
        IMPORTS.append(1)

        def estimate_ram_bytes(version_dir):
            return 123456

        def create_servable(version_dir):
            return IMPORTS
        """,
    )
    loader = make_loader(version_dir)
    assert loader.estimate_resources().ram_bytes == 123456
    loader.load()
    # The module imported for the estimate is the one create_servable runs in.
    assert loader.servable == [1]
    assert loader.estimate_resources().ram_bytes == 123456
    loader.unload()


@pytest.mark.parametrize("value", [-1, "12", 1.5, True])
def test_bad_estimate_is_rejected(tmp_path: Path, value: object) -> None:
    model_py = f"def estimate_ram_bytes(d):\n    return {value!r}\n\ndef create_servable(d):\n    return 1\n"
    version_dir = write_version(tmp_path, 1, model_py)
    before = model_modules()
    with pytest.raises(FailedPreconditionError, match=r"estimate_ram_bytes .*must return an int >= 0"):
        make_loader(version_dir).estimate_resources()
    assert model_modules() == before


def test_broken_model_py_names_the_file(tmp_path: Path) -> None:
    version_dir = write_version(
        tmp_path,
        2,
        """
        def create_servable(version_dir):
            return setup()

        def setup():
            return 1 / 0
        """,
    )
    before = model_modules()
    loader = make_loader(version_dir)
    with pytest.raises(ServingError) as info:
        loader.load()
    message = info.value.message
    assert "{name: m version: 2}" in message
    assert "create_servable raised ZeroDivisionError: division by zero" in message
    assert f"{version_dir / 'model.py'}, line 6, in setup" in message
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert loader.servable is None
    assert model_modules() == before  # a failed load leaves nothing behind


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path, 1, "def create_servable(d):\n    return (\n")
    with pytest.raises(ServingError) as info:
        make_loader(version_dir).load()
    assert "importing model.py raised SyntaxError" in info.value.message
    assert f"{version_dir / 'model.py'}, line" in info.value.message


def test_error_in_helper_at_import_names_the_helper(tmp_path: Path) -> None:
    version_dir = write_version(
        tmp_path,
        1,
        "from . import helper\n\ndef create_servable(d):\n    return 1\n",
        **{"helper.py": "raise RuntimeError('no weights')\n"},
    )
    before = model_modules()
    with pytest.raises(ServingError) as info:
        make_loader(version_dir).load()
    assert info.value.code is Code.UNKNOWN
    assert "RuntimeError: no weights" in info.value.message
    assert f"{version_dir / 'helper.py'}, line 1" in info.value.message
    assert model_modules() == before


def test_failed_load_can_be_retried_after_repair(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path, 1, "def create_servable(d):\n    raise ValueError('not yet')\n")
    loader = make_loader(version_dir)
    with pytest.raises(InvalidArgumentError, match="not yet"):
        loader.load()
    (version_dir / "model.py").write_text("def create_servable(d):\n    return 'ok'\n")
    loader.load()
    assert loader.servable == "ok"
    loader.unload()


def test_missing_create_servable_is_a_clear_error(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path, 1, "def create_model(d):\n    return 1\n")
    with pytest.raises(FailedPreconditionError) as info:
        make_loader(version_dir).load()
    assert "must define create_servable(version_dir)" in info.value.message
    assert "but it defines none" in info.value.message
    assert str(version_dir / "model.py") in info.value.message


def test_create_servable_returning_none_is_an_error(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path, 1, "def create_servable(d):\n    pass\n")
    with pytest.raises(FailedPreconditionError, match="returned None"):
        make_loader(version_dir).load()


def test_missing_directory_and_missing_model_py(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        make_loader(tmp_path / "4").load()
    (tmp_path / "5").mkdir()
    with pytest.raises(NotFoundError, match=r"model\.py does not exist"):
        make_loader(tmp_path / "5").estimate_resources()


def test_options_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="takes no options"):
        PythonModelLoader(ServableId("m", 1), StoragePath(str(tmp_path)), {"warmup": True})


def test_two_versions_with_identical_files_coexist(tmp_path: Path) -> None:
    counter = """
        STATE = {"calls": 0}

        def create_servable(version_dir):
            def call():
                STATE["calls"] += 1
                return version_dir.name, STATE["calls"]
            return call
    """
    one = make_loader(write_version(tmp_path, 1, counter))
    two = make_loader(write_version(tmp_path, 2, counter))
    one.load()
    two.load()
    assert one.servable() == ("1", 1)
    assert one.servable() == ("1", 2)
    assert two.servable() == ("2", 1)  # its own module, its own globals
    assert one.servable.__module__ != two.servable.__module__
    one.unload()
    assert two.servable() == ("2", 2)
    two.unload()


def test_same_version_loaded_by_two_loaders_coexists(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path, 1, ADDER, **{"offset.txt": "1"})
    first, second = make_loader(version_dir, revision="a"), make_loader(version_dir, revision="b")
    first.load()
    second.load()
    assert type(first.servable) is not type(second.servable)
    first.unload()
    assert second.servable(1) == 2
    second.unload()


def test_unload_releases_the_servable(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path, 1, ADDER, **{"offset.txt": "3"})
    loader = make_loader(version_dir)
    loader.load()
    servable_ref = weakref.ref(loader.servable)
    module_ref = weakref.ref(sys.modules[loader.servable.__module__])
    loader.unload()
    gc.collect()
    assert servable_ref() is None
    assert module_ref() is None


def test_dropping_a_never_loaded_loader_forgets_its_module(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path, 1, ADDER, **{"offset.txt": "3"})
    before = model_modules()
    loader = make_loader(version_dir)
    loader.estimate_resources()  # imports model.py
    assert model_modules() != before
    del loader
    gc.collect()
    assert model_modules() == before


def test_close_error_is_reported_and_module_still_forgotten(tmp_path: Path) -> None:
    version_dir = write_version(
        tmp_path,
        1,
        """
        class S:
            def close(self):
                raise OSError("disk gone")

        def create_servable(version_dir):
            return S()
        """,
    )
    before = model_modules()
    loader = make_loader(version_dir)
    loader.load()
    with pytest.raises(ServingError, match=r"Cannot unload Python model .*close raised OSError: disk gone"):
        loader.unload()
    assert loader.servable is None
    assert model_modules() == before


def test_double_load_and_unload_without_load_are_bugs(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path, 1, ADDER, **{"offset.txt": "0"})
    loader = make_loader(version_dir)
    with pytest.raises(FailedPreconditionError, match="not loaded"):
        loader.unload()
    loader.load()
    with pytest.raises(FailedPreconditionError, match="already loaded"):
        loader.load()
    loader.unload()


def test_concurrent_loads_of_different_versions(tmp_path: Path) -> None:
    model_py = textwrap.dedent(ADDER) + "\nfrom . import helper\n"
    loaders = [
        make_loader(write_version(tmp_path, v, model_py, **{"offset.txt": str(v), "helper.py": "X = 1\n"}))
        for v in range(1, 7)
    ]
    start = threading.Barrier(len(loaders), timeout=10)
    errors: list[BaseException] = []

    def load(loader: PythonModelLoader) -> None:
        try:
            start.wait()
            loader.load()
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(loader,)) for loader in loaders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert [loader.servable(0) for loader in loaders] == list(range(1, 7))
    for loader in loaders:
        loader.unload()
