"""Batching a real SavedModel through the tensorflow platform's ``"batching"`` option
(BatchingLoader over SavedModelLoader): predict, classify and regress from many threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from pyserving.loaders.batching import BatchingConfig, BatchingLoader, BatchingServable
from pyserving.loaders.batching_params import BatchingParameters
from pyserving.loaders.platform import get_platform
from pyserving.servable.batcher import BatchScheduler
from pyserving.servable.ids import ServableId
from pyserving.sources.storage_path import StoragePath
from tests.support.concurrency import hammer
from tests.support.saved_models import write_half_plus_two_tf1

pytestmark = pytest.mark.slow

WAIT_S = 60.0


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hpt") / "1"
    write_half_plus_two_tf1(path)
    return path


@pytest.fixture
def loaded(version_dir: Path) -> Iterator[BatchingServable]:
    scheduler = BatchScheduler(2, name="tf_batch")
    config = BatchingConfig(scheduler, BatchingParameters(max_batch_size=8, allowed_batch_sizes=(2, 4, 8),
                                                          max_enqueued_batches=1000))
    loader = get_platform("tensorflow").create_loader(ServableId("hpt", 1), StoragePath(str(version_dir)),
                                                      {"batching": config, "saved_model_tags": "serve"})
    assert isinstance(loader, BatchingLoader)
    loader.load()
    try:
        yield loader.servable
    finally:
        loader.unload()
        assert scheduler.statistics() == []  # the queues left the scheduler
        assert scheduler.wait_for(lambda: not scheduler._threads, WAIT_S)  # and its threads ended
        scheduler.stop()


def _examples(xs: list[float]) -> list[bytes]:
    from tensorflow.core.example import example_pb2

    records = []
    for x in xs:
        example = example_pb2.Example()
        example.features.feature["x"].float_list.value.append(x)
        records.append(example.SerializeToString())
    return records


def _hammer(clients: int, calls: int, one_call: Callable[[int, int], str | None]) -> list[str]:
    return hammer(clients, calls, one_call, WAIT_S)


def test_concurrent_predict_classify_regress_get_their_own_answers(loaded: BatchingServable) -> None:
    assert loaded.execution == "session"  # other attributes come from the SavedModel servable
    assert "serving_default" in loaded.signature_def_map()

    def one_call(number: int, call: int) -> str | None:
        rows = 1 + (number + call) % 5
        xs = [float(number * 100 + call * 7 + i) for i in range(rows)]
        expected = np.array([0.5 * x + 2 for x in xs], np.float32)
        kind = call % 3
        if kind == 0:
            got: Any = loaded.run("serving_default", {"x": np.array(xs, np.float32).reshape(-1, 1)})["y"].reshape(-1)
        elif kind == 1:
            got = loaded.classify("classify_x_to_y", _examples(xs))["scores"].reshape(-1)
        else:
            got = loaded.regress("regress_x_to_y", _examples(xs))
        return None if np.allclose(got, expected) else f"{got} != {expected}"

    assert _hammer(8, 24, one_call) == []
    stats = loaded.signature_statistics()
    assert stats["serving_default"].tasks == 8 * 8 and stats["classify_x_to_y"].tasks == 8 * 8
    assert stats["regress_x_to_y"].tasks == 8 * 8
    total = loaded.statistics()
    assert total.tasks == 8 * 24 and total.failed_batches == 0
    assert set(total.batch_sizes) <= set(range(1, 9))


def test_model_errors_and_refusals_keep_tf_servings_codes(loaded: BatchingServable) -> None:
    from pyserving.servable.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="Task size 9 is larger than maximum input batch size 8"):
        loaded.run("serving_default", {"x": np.ones((9, 1), np.float32)})
    with pytest.raises(InvalidArgumentError, match="has shape \\[2,2\\]"):
        loaded.run("serving_default", {"x": np.ones((2, 2), np.float32)})
    # A regress signature whose input is not serialized examples goes to the SavedModel
    # servable unbatched, which answers exactly as without batching.
    with pytest.raises(InvalidArgumentError, match="Input 'inputs' has dtype DT_STRING, but the signature expects DT_FLOAT"):
        loaded.regress("regress_x2_to_y3", _examples([1.0]))
    assert loaded.run("serving_default", {"x": np.ones((1, 1), np.float32)})["y"].tolist() == [[2.5]]
