"""Regenerate the bundled demo model ``pyserving/data/half_plus_two/00000123``.

The model is TF Serving's half_plus_two (``y = 0.5 * x + 2``; input ``x`` of any shape, output ``y``;
classify and regress signatures too), written as a TF1 graph SavedModel by
``tests.support.saved_models.write_half_plus_two_tf1``. Run from anywhere::

    python tools/make_demo_model.py [--output DIR]

The model is written to a temporary directory next to the target and then moved into
place, replacing the previous one, and checked by loading it: 1.0, 2.0, 5.0 -> 2.5, 3.0, 4.5.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "pyserving" / "data" / "half_plus_two" / "00000123"


def make_demo_model(output: Path) -> None:
    """Write half_plus_two into ``output`` (replacing it) and check that it answers."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import numpy as np

    from pyserving.loaders.saved_model import SavedModelServable
    from tests.support.saved_models import write_half_plus_two_tf1

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        staged = Path(scratch) / "model"
        write_half_plus_two_tf1(staged, a=0.5, b=2.0, any_shape_x=True)
        servable = SavedModelServable.load(staged)
        try:
            y = servable.run("serving_default", {"x": np.array([1.0, 2.0, 5.0], np.float32)})["y"]
        finally:
            servable.close()
        if y.ravel().tolist() != [2.5, 3.0, 4.5]:
            raise SystemExit(f"generated model answers {y.ravel().tolist()}, expected [2.5, 3.0, 4.5]")
        if output.exists():
            shutil.rmtree(output)
        shutil.move(str(staged), str(output))
    size = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
    print(f"wrote {output} ({size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="version directory to write")
    make_demo_model(parser.parse_args().output)


if __name__ == "__main__":
    main()
