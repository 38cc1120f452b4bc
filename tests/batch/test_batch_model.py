"""open_local_model: versions through pyserving's version scan and policies, labels through a model
config, single model folders, signatures; LocalModel satisfies BatchModel."""

from __future__ import annotations

import numpy as np
import pytest

from pyserving.batch import BatchModel, open_local_model
from pyserving.servable.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from tests.batch.batch_support import affine, rows, write_affine_model


@pytest.fixture()
def base(tmp_path):
    for version, scale in ((1, 1.0), (2, 2.0), (10, 10.0)):
        write_affine_model(tmp_path / "affine" / str(version), scale=scale)
    (tmp_path / "affine" / "11.tmp").mkdir()  # not a version
    (tmp_path / "affine" / "12").mkdir()  # not complete: no model.py
    return tmp_path / "affine"


def _scale(model) -> float:
    x = rows(4)
    return float(model.score({"x": x})["y"][0, 0] / affine(x)[0][0, 0])


def test_latest_complete_version_by_default_and_a_specific_one(base):
    with open_local_model(base) as model:
        assert isinstance(model, BatchModel)
        assert model.description == "{name: affine version: 10}"
        assert model.signature_name == "serving_default" and model.method == "tensorflow/serving/predict"
        assert list(model.signature.inputs) == ["x"] and model.preferred_batch_size is None
        assert _scale(model) == pytest.approx(10.0)
    with open_local_model(base, version=2) as model:
        assert model.description == "{name: affine version: 2}" and _scale(model) == pytest.approx(2.0)


def test_a_missing_version_names_the_complete_ones(base):
    with pytest.raises(NotFoundError, match=r"no version of model affine .* specific \{ versions: \[7\] \}.* 1, 2, 10"):
        open_local_model(base, version=7)


def test_a_single_model_folder_is_version_1(base):
    with open_local_model(base / "2") as model:
        assert model.description == "{name: 2 version: 1}" and _scale(model) == pytest.approx(2.0)
    with pytest.raises(InvalidArgumentError, match="single model folder"):
        open_local_model(base / "2", version=3)


def test_preferred_batch_size_comes_from_the_servable(tmp_path):
    write_affine_model(tmp_path / "m" / "1", preferred=96)
    with open_local_model(tmp_path / "m") as model:
        assert model.preferred_batch_size == 96


def test_preferred_batch_size_comes_from_batching_params(tmp_path):
    write_affine_model(tmp_path / "m" / "1")
    (tmp_path / "m" / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 48 }\n")
    with open_local_model(tmp_path / "m") as model:
        assert model.preferred_batch_size == 48


def test_labels_need_a_model_config(base, tmp_path):
    with pytest.raises(InvalidArgumentError, match="--label 'stable' needs --model-config FILE"):
        open_local_model(base, label="stable")
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list { config { name: 'affine' base_path: '%s' model_platform: 'python' "
        "model_version_policy { all {} } version_labels { key: 'stable' value: 2 } "
        "version_labels { key: 'canary' value: 10 } } }\n" % base
    )
    with open_local_model("affine", label="stable", model_config=str(config)) as model:  # by name
        assert model.description == "{name: affine version: 2}"
    with open_local_model(base, label="canary", model_config=str(config)) as model:  # by base path
        assert _scale(model) == pytest.approx(10.0)
    with pytest.raises(NotFoundError, match="no version label 'old'; its labels: canary, stable"):
        open_local_model("affine", label="old", model_config=str(config))
    with pytest.raises(NotFoundError, match="names no model called 'other'"):
        open_local_model("other", label="stable", model_config=str(config))
    with pytest.raises(InvalidArgumentError, match="not both"):
        open_local_model(base, version=1, label="stable")


def test_signature_choice(base):
    with pytest.raises(NotFoundError, match="has no signature 'nope'; its signatures: serving_default"):
        open_local_model(base, signature="nope")
    with open_local_model(base, signature="serving_default") as model:
        np.testing.assert_allclose(model.score({"x": rows(2)})["total"], affine(rows(2), 10.0)[1], rtol=1e-6)
        with pytest.raises(InvalidArgumentError, match="classify or regress"):
            model.score_examples([b""])


def test_paths_without_a_model(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        open_local_model(tmp_path / "missing")
    (tmp_path / "empty" / "1").mkdir(parents=True)
    with pytest.raises(NotFoundError, match="no model found"):
        open_local_model(tmp_path / "empty")


def test_a_servable_without_signatures_is_refused(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.py").write_text("def create_servable(d):\n    return object()\n")
    with pytest.raises(FailedPreconditionError, match="not an inference servable"):
        open_local_model(tmp_path / "m")


def test_probe_batch_size_picks_a_candidate_and_skips_what_it_cannot_feed(base):
    from pyserving.batch.model import PROBE_BATCH_SIZES, probe_batch_size

    with open_local_model(base) as model:
        assert probe_batch_size(model) in PROBE_BATCH_SIZES
        assert probe_batch_size(model, candidates=(8,)) == 8

    from pyserving.servable.signature import DType, SignatureSpec, TensorSpec

    class Strings:
        method = "tensorflow/serving/predict"
        signature = SignatureSpec(inputs={"s": TensorSpec(DType.STRING, (None,))}, outputs={})

        def score(self, inputs):
            raise AssertionError("a string input is never probed")

    assert probe_batch_size(Strings()) is None  # nothing it can fill: the job's default applies
