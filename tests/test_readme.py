"""The README: its Python blocks run as written and its set-up commands are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

MAIN_COMMAND = (
    'python -m venv .venv && . .venv/bin/activate && pip install -e ".[examples]" '
    "&& python examples/digits.py"
)
TEST_COMMAND = (
    'python -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && python -m pytest'
)


def python_blocks(markdown: str) -> list[tuple[str, str]]:
    """Every fenced python block as (heading above it, code)."""
    blocks = []
    heading = ""
    for match in re.finditer(r"^(#+ [^\n]*)$|^```python\n(.*?)^```$", markdown, re.M | re.S):
        if match.group(1):
            heading = match.group(1).lstrip("# ").strip()
        else:
            blocks.append((heading, match.group(2)))
    return blocks


def test_readme_has_a_quickstart_block() -> None:
    assert "Quickstart" in [heading for heading, _ in python_blocks(README)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "code",
    [pytest.param(code, id=heading) for heading, code in python_blocks(README)],
)
def test_readme_python_block_runs_as_written(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the quickstart saves a file
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})


def test_readme_shows_the_main_job_command() -> None:
    assert MAIN_COMMAND in README


def test_readme_shows_the_test_command() -> None:
    assert TEST_COMMAND in README


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert TEST_COMMAND.rsplit("&& ", 1)[1] in [line.strip() for line in ci_lines]


def test_main_job_script_exists() -> None:
    script = MAIN_COMMAND.rsplit("python ", 1)[1]
    assert (ROOT / script).is_file()
