"""The README's two commands are the ones that are run: CI runs the test command verbatim."""
from conftest import ROOT


def code_lines(text):
    return [line.strip() for line in text.splitlines() if line.strip().startswith("python3 -m venv .venv && ")]


def test_ci_runs_the_readme_test_command():
    readme = code_lines((ROOT / "README.md").read_text())
    ci = code_lines((ROOT / ".ci" / "run").read_text())
    assert len(readme) == 2 and len(ci) == 1
    assert ci[0] == readme[1] and readme[1].endswith("python -m pytest -q")


def test_quick_start_runs_the_three_scripts():
    demo = code_lines((ROOT / "README.md").read_text())[0]
    for script in ("prepare_data.py", "train.py", "denoise.py"):
        assert f"python {script}" in demo and (ROOT / script).exists()
