"""The ``"python"`` platform: a user's own Python code as a first-class servable.

Convention for a version directory (``<base_path>/<version>/``)::

    <base_path>/1/
        model.py        required: defines create_servable(version_dir)
        helper.py       optional: more modules, imported relatively from model.py
        weights.bin     optional: any data files model.py reads

``model.py`` must define, at module level:

* ``create_servable(version_dir: pathlib.Path) -> object`` — required. Called once per
  load with the version directory (absolute). Whatever it returns (anything but
  ``None``) is the servable that requests use. If that object has a callable
  ``close()``, pyserving calls it once when the version is unloaded.
* ``estimate_ram_bytes(version_dir: pathlib.Path) -> int`` — optional. The bytes of
  memory the loaded version will use; the manager uses it to decide whether the version
  fits. Without it the estimate is the total size of the files in the directory.

How ``model.py`` is imported:

* Under a private module name unique to each import (``_pyserving_model_<name>_v<version>_<n>``),
  so several versions, or several models with identical files, coexist. ``__file__`` is
  the path of ``model.py``; ``__name__`` is not ``"__main__"``.
* As a *package* whose directory is the version directory: other ``.py`` files and
  sub-packages of the version directory are imported **relatively** —
  ``from . import helper`` or ``from .helper import tokenize``. ``sys.path`` is never
  changed, so ``import helper`` (absolute) does not find them: it would leak one
  version's modules into another's.
* From source only: nothing is written to the version directory (no ``__pycache__``),
  so loading never changes the version's revision and read-only directories work.
* ``model.py`` is imported when the manager first asks for the version's resource
  estimate, before ``create_servable`` is called: keep its top-level code cheap
  (imports and definitions) and do the expensive work in ``create_servable``. A failed
  load is retried by importing ``model.py`` afresh.

Unload calls ``close()`` (if any), then removes the model's modules from ``sys.modules``
and drops every reference pyserving holds, so the servable and the module can be garbage
collected once requests release them. State that model code keeps elsewhere (threads it
started, caches in other modules) is the model's to release in ``close()``.

Errors: a problem with the directory is ``NOT_FOUND`` (no directory, no ``model.py``) or
``FAILED_PRECONDITION`` (no ``create_servable``, it returned ``None``, a bad estimate).
An exception raised by the model's own code keeps its code as translated by
``as_serving_error`` and its message names the step, the exception line and the file and
line where it was raised, e.g. ``Cannot load Python model {name: m version: 1}:
create_servable raised ZeroDivisionError: division by zero (at /m/1/model.py, line 4, in
create_servable)``.

Threading: loads of different loaders may run concurrently. One loader's methods are
serialised by its own lock (the model's code runs while it is held; the manager's locks
are never held). Request threads read :attr:`PythonModelLoader.servable` without a lock.

Platform options: none are defined; any option is rejected with ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import os
import re
import sys
import threading
import traceback
import types
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

from pyserving.loaders.loader import Loader, Resources
from pyserving.loaders.platform import Platform
from pyserving.loaders.simple_loader import close_if_closable
from pyserving.servable.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    as_serving_error,
)
from pyserving.servable.ids import ServableId
from pyserving.sources.storage_path import StoragePath

__all__ = ["PythonModelLoader", "PYTHON_PLATFORM", "MODEL_FILE", "is_version_ready", "create_loader"]

#: The file every Python model version directory holds.
MODEL_FILE = "model.py"

_MODULE_PREFIX = "_pyserving_model_"
_counter = itertools.count(1)  # next() is atomic under the GIL


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles from the ``.py`` file every time; never reads or writes ``__pycache__``."""

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)

    def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:  # noqa: ARG002
        return None


class _ModelSubmoduleFinder(importlib.abc.MetaPathFinder):
    """Finds the submodules of imported models (``<model module>.helper``) with :class:`_SourceOnlyLoader`.

    Only names under a registered model module are answered; everything else falls
    through to Python's own finders.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _roots
        self._roots: set[str] = set()

    def add(self, module_name: str) -> None:
        with self._lock:
            self._roots.add(module_name)

    def discard(self, module_name: str) -> None:
        with self._lock:
            self._roots.discard(module_name)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        root, dot, _rest = fullname.partition(".")
        with self._lock:
            ours = bool(dot) and root in self._roots
        if not ours:
            return None
        for entry in path or ():
            finder = importlib.machinery.FileFinder(
                entry, (_SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES)
            )
            spec = finder.find_spec(fullname, target)
            if spec is not None:
                return spec
        return None


_finder_lock = threading.Lock()  # guards _finder
_finder: _ModelSubmoduleFinder | None = None


def _submodule_finder() -> _ModelSubmoduleFinder:
    """The process-wide finder, put at the front of ``sys.meta_path`` on first use."""
    global _finder
    with _finder_lock:
        if _finder is None:
            _finder = _ModelSubmoduleFinder()
            sys.meta_path.insert(0, _finder)
        return _finder


def _forget_module(module_name: str) -> None:
    """Remove ``module_name`` and its submodules from ``sys.modules`` and from the finder."""
    _submodule_finder().discard(module_name)
    prefix = module_name + "."
    for key in [k for k in list(sys.modules) if k == module_name or k.startswith(prefix)]:
        sys.modules.pop(key, None)


def _directory_size(path: Path) -> int:
    """Total size in bytes of the files under ``path`` (files that vanish meanwhile count 0)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


class PythonModelLoader(Loader):
    """Loads one version directory of the ``"python"`` platform; see the module docstring."""

    def __init__(
        self,
        servable_id: ServableId,
        storage_path: StoragePath,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(servable_id, ServableId):
            raise InvalidArgumentError(f"servable_id must be a ServableId, got {servable_id!r}")
        if not isinstance(storage_path, StoragePath):
            raise InvalidArgumentError(f"storage_path must be a StoragePath, got {storage_path!r}")
        if options:
            raise InvalidArgumentError(
                f"platform 'python' takes no options, got {sorted(options)} for servable {servable_id}"
            )
        self._id = servable_id
        self._version_dir = Path(storage_path.path)
        self._revision = storage_path.revision
        self._lock = threading.Lock()  # guards every field below; held while model code runs
        self._module: types.ModuleType | None = None
        self._forget: weakref.finalize | None = None  # removes _module from sys.modules
        self._estimate: Resources | None = None
        self._servable: Any = None

    @property
    def servable_id(self) -> ServableId:
        return self._id

    @property
    def version_dir(self) -> Path:
        return self._version_dir

    @property
    def revision(self) -> str | None:
        return self._revision

    @property
    def servable(self) -> Any:
        return self._servable

    def estimate_resources(self) -> Resources:
        """``estimate_ram_bytes(version_dir)`` if model.py defines it, else the directory's size.

        Imports ``model.py`` on the first call; the answer is computed once.
        """
        with self._lock:
            if self._estimate is None:
                module = self._import_locked()
                estimate = getattr(module, "estimate_ram_bytes", None)
                if estimate is None:
                    ram = _directory_size(self._version_dir)
                else:
                    ram = self._call_locked("estimate_ram_bytes", estimate)
                    if isinstance(ram, bool) or not isinstance(ram, int) or ram < 0:
                        self._discard_module_locked()
                        raise FailedPreconditionError(
                            f"Cannot load Python model {self._id}: estimate_ram_bytes in {self._model_file} "
                            f"must return an int >= 0, got {ram!r}"
                        )
                self._estimate = Resources(ram_bytes=ram)
            return self._estimate

    def load(self) -> None:
        with self._lock:
            if self._servable is not None:
                raise FailedPreconditionError(
                    f"Python model {self._id} is already loaded; load() called twice"
                )
            module = self._import_locked()
            create = getattr(module, "create_servable", None)
            if not callable(create):
                self._discard_module_locked()
                found = f"create_servable is {create!r}" if create is not None else "it defines none"
                raise FailedPreconditionError(
                    f"Cannot load Python model {self._id}: {self._model_file} must define "
                    f"create_servable(version_dir) -> object, but {found}"
                )
            servable = self._call_locked("create_servable", create)
            if servable is None:
                self._discard_module_locked()
                raise FailedPreconditionError(
                    f"Cannot load Python model {self._id}: create_servable in {self._model_file} "
                    f"returned None; it must return the servable object"
                )
            self._servable = servable

    def unload(self) -> None:
        """Call the servable's ``close()`` (if any), then forget the model's modules.

        The modules are forgotten and the servable dropped even when ``close()`` raises;
        its error then propagates as a ``ServingError``.
        """
        with self._lock:
            servable, self._servable = self._servable, None
            if servable is None:
                raise FailedPreconditionError(
                    f"Python model {self._id} is not loaded; unload() called without load()"
                )
            try:
                close_if_closable(servable)
            except Exception as exc:  # noqa: BLE001 - translated for the manager
                raise self._model_error("close", exc, doing="unload") from exc
            finally:
                del servable
                self._discard_module_locked()

    @property
    def _model_file(self) -> Path:
        return self._version_dir / MODEL_FILE

    def _import_locked(self) -> types.ModuleType:
        """The imported ``model.py`` (imported now unless it already is). Caller holds ``_lock``."""
        if self._module is not None:
            return self._module
        if not self._version_dir.is_dir():
            raise NotFoundError(
                f"Cannot load Python model {self._id}: version directory {self._version_dir} does not exist"
            )
        if not self._model_file.is_file():
            raise NotFoundError(
                f"Cannot load Python model {self._id}: {self._model_file} does not exist; a Python "
                f"model version directory must hold {MODEL_FILE} defining create_servable(version_dir)"
            )
        safe_name = re.sub(r"\W", "_", self._id.name)
        module_name = f"{_MODULE_PREFIX}{safe_name}_v{self._id.version}_{next(_counter)}"
        origin = str(self._model_file)
        spec = importlib.util.spec_from_file_location(
            module_name,
            origin,
            loader=_SourceOnlyLoader(module_name, origin),
            submodule_search_locations=[str(self._version_dir)],
        )
        if spec is None or spec.loader is None:  # not expected for a .py file
            raise FailedPreconditionError(f"Cannot load Python model {self._id}: cannot import {origin}")
        module = importlib.util.module_from_spec(spec)
        finder = _submodule_finder()
        finder.add(module_name)
        sys.modules[module_name] = module  # before exec: relative imports and dataclasses need it
        forget = weakref.finalize(self, _forget_module, module_name)
        forget.atexit = False
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            forget()
            raise self._model_error(f"importing {MODEL_FILE}", exc) from exc
        self._module = module
        self._forget = forget
        return module

    def _call_locked(self, step: str, function: Any) -> Any:
        """``function(version_dir)``; an exception forgets the module and is translated."""
        try:
            return function(self._version_dir)
        except (Exception, SystemExit) as exc:
            self._discard_module_locked()
            raise self._model_error(step, exc) from exc

    def _discard_module_locked(self) -> None:
        self._module = None
        forget, self._forget = self._forget, None
        if forget is not None:
            forget()

    def _model_error(self, step: str, exc: BaseException, doing: str = "load") -> ServingError:
        """A ``ServingError`` naming the step, the exception line and where it was raised."""
        last_line = traceback.format_exception_only(type(exc), exc)[-1].strip()
        where = _raised_at(exc, self._version_dir) or str(self._model_file)
        return ServingError.from_code(
            as_serving_error(exc).code,
            f"Cannot {doing} Python model {self._id}: {step} raised {last_line} (at {where})",
        )

    def __repr__(self) -> str:
        state = "loaded" if self._servable is not None else "not loaded"
        return f"<PythonModelLoader {self._id} {self._version_dir} {state}>"


def _raised_at(exc: BaseException, version_dir: Path) -> str | None:
    """``"<file>, line <n>[, in <function>]"`` of the innermost frame in the version directory."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}, line {exc.lineno}"
    prefix = str(version_dir) + os.sep
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith(prefix):
            return f"{frame.filename}, line {frame.lineno}, in {frame.name}"
    return None


def is_version_ready(version_dir: Path) -> bool:
    """A version directory is ready to load once it holds ``model.py``."""
    return (Path(version_dir) / MODEL_FILE).is_file()


def create_loader(servable_id: ServableId, storage_path: StoragePath, options: Mapping[str, Any]) -> Loader:
    """The platform's loader factory: cheap, touches no file."""
    return PythonModelLoader(servable_id, storage_path, options)


PYTHON_PLATFORM = Platform(name="python", create_loader=create_loader, is_version_ready=is_version_ready)
