"""The house rules, checked: no import cycle between the project's modules, no function over 60 lines,
and the sample rate written once (in audio.py)."""
import ast

from conftest import ROOT

MODULES = {p.stem: p for p in ROOT.glob("*.py")}


def imports(path):
    """The project modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(MODULES)


def test_no_import_cycles():
    graph = {m: imports(p) - {m} for m, p in MODULES.items()}
    assert "checkpoint" in graph["denoise"] and "onnx_backend" in graph["denoise"]  # the graph is read at all
    done, path = set(), []

    def visit(m):
        assert m not in path, "import cycle: " + " -> ".join(path[path.index(m):] + [m])
        if m in done:
            return
        path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_no_function_over_60_lines():
    long = [f"{p.name}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in MODULES.values() for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


def test_the_sample_rate_is_written_once():
    found = [f"{p.name}:{n.lineno}" for p in MODULES.values() if p.name != "audio.py"
             for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Constant) and n.value == 16000]
    assert not found, f"literal 16000 outside audio.py (use AudioConfig): {found}"
