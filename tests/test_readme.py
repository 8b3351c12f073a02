"""The README's commands are ones that work: CI runs its test command verbatim, and every `python X.py ...`
in its code blocks is accepted by X.py's own argument parser (a renamed or removed flag fails here)."""
import importlib
import re
import shlex

from conftest import ROOT


def code_lines(text):
    return [line.strip() for line in text.splitlines() if line.strip().startswith("python3 -m venv .venv && ")]


def script_commands(text):
    """(script, argv) for every `python X.py ...` in the code blocks (continuations joined, && chains split)."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    found = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if len(words) >= 2 and words[0] == "python" and (ROOT / words[1]).is_file():
                found.append((words[1][:-3], words[2:]))
    return found


def test_ci_runs_the_readme_test_command():
    readme = code_lines((ROOT / "README.md").read_text())
    ci = code_lines((ROOT / ".ci" / "run").read_text())
    assert len(readme) == 2 and len(ci) == 1
    assert ci[0] == readme[1] and readme[1].endswith("python -m pytest -q")


def test_every_readme_command_parses():
    commands = script_commands((ROOT / "README.md").read_text())
    quick_start = [s for s, _ in script_commands(code_lines((ROOT / "README.md").read_text())[0].join(["```\n", "\n```\n"]))]
    assert quick_start == ["prepare_data", "train", "denoise"]
    assert {"prepare_data", "train", "denoise", "evaluate", "compare"} <= {s for s, _ in commands}
    for script, argv in commands:
        importlib.import_module(script).parse_args(argv)  # argparse exits (SystemExit) on a flag it does not know
