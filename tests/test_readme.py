"""The README's promises, checked: the library example runs, the quick start matches CI."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]
    install_and_serve = [c for c in commands if "pyserving serve" in c]
    test_command = [c for c in commands if "pytest" in c]
    assert install_and_serve == ["pip install . && pyserving serve"]
    assert test_command == ["pip install '.[test]' && python -m pytest"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command[0] in ci.splitlines(), ".ci/run must run the README's test command verbatim"


def test_library_example_runs(tmp_path):
    example = next(block for block in _code_blocks("python") if "create_servable" in block)
    script = tmp_path / "example.py"
    script.write_text(example, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "{name: greeter version: 1} Hello, world!",
        "{name: greeter version: 2} Bonjour, world!",
    ]


def test_flag_table_matches_the_flags() -> None:
    """Every flag has a README row whose status word matches its FlagSpec."""
    from pyserving.server.flags import FLAGS, FlagStatus

    words = {FlagStatus.IMPLEMENTED: "implemented", FlagStatus.LATER: "not supported yet",
             FlagStatus.NOT_APPLICABLE: "accepted"}
    for spec in FLAGS:
        row = re.search(rf"^\| `--{spec.name}` \| [^|]* \| ([^|]*) \|$", README, flags=re.M)
        assert row is not None, f"README has no row for --{spec.name}"
        assert row.group(1).startswith(words[spec.status]), (spec.name, row.group(1))
