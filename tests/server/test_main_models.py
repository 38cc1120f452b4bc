"""Which models the server binary's flags describe (no server started)."""

from pyserving.server.flags import parse_model_server_args
from pyserving.server.main import models_from_flags


def _models(*argv: str):
    return models_from_flags(parse_model_server_args(list(argv)))


def test_model_base_path_of_a_python_model_uses_the_python_platform(tmp_path):
    (tmp_path / "greeter" / "3").mkdir(parents=True)
    (tmp_path / "greeter" / "3" / "model.py").write_text("def create_servable(d):\n    return 1\n")
    [model] = _models("--model_name=greeter", f"--model_base_path={tmp_path / 'greeter'}")
    assert (model.name, model.platform, model.base_path) == ("greeter", "python", str(tmp_path / "greeter"))


def test_model_base_path_defaults_to_tensorflow(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    [model] = _models(f"--model_base_path={tmp_path / 'm'}")
    assert (model.name, model.platform) == ("default", "tensorflow")
    [missing] = _models(f"--model_base_path={tmp_path / 'nothing-here'}")
    assert missing.platform == "tensorflow"
