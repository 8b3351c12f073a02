"""The README's commands are ones that work: CI runs its test command verbatim, and every `python X.py ...`
in its code blocks is accepted by X.py's own argument parser (a renamed or removed flag fails here);
every relative link in README.md and MODEL_CARD.md points to a file or folder that exists."""
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


def relative_links(text):
    """The targets of markdown links `[text](target)` that point inside the repo (no URL, no bare #anchor), anchor cut."""
    targets = re.findall(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    return [t.split("#", 1)[0] for t in targets if not re.match(r"(https?:|mailto:|#)", t, flags=re.I)]


def test_every_relative_link_exists():
    for name in ("README.md", "MODEL_CARD.md"):
        links = relative_links((ROOT / name).read_text())
        missing = [link for link in links if not (ROOT / link).exists()]
        assert not missing, f"{name} links to files that do not exist: {missing}"
