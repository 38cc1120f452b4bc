"""settings_from_flags: what the binary hands the TensorFlow platform for the thread flags."""

from __future__ import annotations

import pytest

from pyserving.server.flags import parse_model_server_args
from pyserving.server.main import settings_from_flags


def tensorflow_options(*flags: str) -> dict[str, object]:
    return dict(settings_from_flags(parse_model_server_args(["--model_base_path=/m", *flags])).core.platform_options[
        "tensorflow"
    ])


@pytest.mark.parametrize(
    ("flags", "inter", "intra"),
    [
        ((), -1, 0),  # neither flag: ops on the calling thread (pyserving's default)
        (("--tensorflow_inter_op_parallelism=0",), 0, 0),  # explicit 0: TensorFlow decides, as in TF Serving
        (("--tensorflow_session_parallelism=0",), 0, 0),
        (("--tensorflow_inter_op_parallelism=3",), 3, 0),
        (("--tensorflow_session_parallelism=2",), 2, 2),
        (("--tensorflow_session_parallelism=2", "--tensorflow_inter_op_parallelism=4"), 4, 2),
        (("--tensorflow_inter_op_parallelism=-1",), -1, 0),
    ],
)
def test_thread_flags(flags: tuple[str, ...], inter: int, intra: int) -> None:
    options = tensorflow_options(*flags)
    assert options["inter_op_parallelism"] == inter
    assert options["intra_op_parallelism"] == intra
