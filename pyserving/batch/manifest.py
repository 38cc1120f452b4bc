"""The manifest of a batch job: which chunks are done, so ``--resume`` continues exactly after them.

A job's rows are cut into chunks of ``chunk_rows`` rows by row number (chunk ``i`` is rows
``[i * chunk_rows, (i + 1) * chunk_rows)``), written in order. After chunk ``i``'s part file
is in place (written to a temporary name, then ``os.replace``) and its bad rows are
appended to the errors file, the manifest is rewritten (temporary file + ``os.replace``)
with chunk ``i`` added and the errors file's new length. So the manifest never names a
chunk whose data is not complete, and a crash at any point loses at most the chunk being
written: a resumed job removes part files the manifest does not name, cuts the errors file
back to the recorded length, and starts at the first row after the last recorded chunk.

The manifest also records the job's options (``options``: model and version, signature,
input file with size and modification time, formats, column mapping, id column, chunk
size) and their digest; a resume whose options differ is refused naming the fields.

JSON, version ``pyserving-batch-manifest/1``. Not thread-safe: one writer thread owns it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyserving.servable.errors import FailedPreconditionError

__all__ = ["Manifest", "ChunkRecord", "options_digest", "write_atomically", "MANIFEST_VERSION"]

MANIFEST_VERSION = "pyserving-batch-manifest/1"


def options_digest(options: dict[str, Any]) -> str:
    """sha256 of the options' canonical JSON."""
    text = json.dumps(options, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


@dataclass
class ChunkRecord:
    """Chunk ``index``: rows ``[start, end)``, ``written`` of them in ``file`` (None when none
    was good), ``failed`` in the errors file."""

    index: int
    start: int
    end: int
    written: int
    failed: int
    file: str | None


@dataclass
class Manifest:
    options: dict[str, Any]
    chunk_rows: int
    chunks: list[ChunkRecord] = field(default_factory=list)
    errors_bytes: int = 0
    schema: str | None = None  # base64 Arrow IPC schema of the Parquet parts, set by the first part
    complete: bool = False

    @property
    def digest(self) -> str:
        return options_digest(self.options)

    @property
    def rows_done(self) -> int:
        return self.chunks[-1].end if self.chunks else 0

    @property
    def rows_written(self) -> int:
        return sum(c.written for c in self.chunks)

    @property
    def rows_failed(self) -> int:
        return sum(c.failed for c in self.chunks)

    def to_json(self) -> bytes:
        return json.dumps({
            "format": MANIFEST_VERSION,
            "options": self.options,
            "digest": self.digest,
            "chunk_rows": self.chunk_rows,
            "chunks": [vars(c) for c in self.chunks],
            "errors_bytes": self.errors_bytes,
            "schema": self.schema,
            "complete": self.complete,
        }, indent=1, default=str).encode("utf-8")

    def save(self, path: Path) -> None:
        write_atomically(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != MANIFEST_VERSION:
                raise ValueError(f"format {data.get('format')!r}, expected {MANIFEST_VERSION!r}")
            chunks = [ChunkRecord(**c) for c in data["chunks"]]
            manifest = cls(data["options"], int(data["chunk_rows"]), chunks, int(data["errors_bytes"]),
                           data.get("schema"), bool(data.get("complete")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FailedPreconditionError(
                f"cannot read the batch manifest {path}: {exc}; remove it (or pass --overwrite) to start over"
            ) from exc
        for position, chunk in enumerate(chunks):
            if chunk.index != position:
                raise FailedPreconditionError(f"batch manifest {path} is damaged: chunk {position} is "
                                              f"recorded as {chunk.index}; pass --overwrite to start over")
        return manifest

    def differences(self, options: dict[str, Any]) -> list[str]:
        """``"field: recorded -> now"`` for each option that differs from ``options``."""
        keys = sorted(set(self.options) | set(options))
        return [f"{k}: {self.options.get(k)!r} -> {options.get(k)!r}" for k in keys
                if json.dumps(self.options.get(k), sort_keys=True, default=str)
                != json.dumps(options.get(k), sort_keys=True, default=str)]
