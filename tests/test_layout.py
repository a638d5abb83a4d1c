"""The tree shows the architecture: no import cycles among tinyunet's modules (module-level and
deferred imports alike), the ops and kernels import nothing of the pipeline, inference nothing of
training, CONTRIBUTING.md's layout table names every module and folder, and CI runs the
README's test command."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def modules():
    """{dotted name: path} of tinyunet's modules; kernels/ is tinyunet.kernels."""
    out = {}
    for f in sorted((ROOT / "tinyunet").rglob("*.py")) + sorted((ROOT / "kernels").glob("*.py")):
        rel = f.relative_to(ROOT).with_suffix("").parts
        parts = ["tinyunet"] + list(rel) if rel[0] == "kernels" else list(rel)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def import_graph():
    """{module: the tinyunet modules it imports anywhere in its file}."""
    mods = modules()
    graph = {}
    for name, f in mods.items():
        pkg = name if f.stem == "__init__" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                subs = {f"{mod}.{a.name}" for a in node.names} & set(mods)
                # `from pkg import submodule` depends on the submodule, not on all of pkg
                deps |= subs if len(subs) == len(node.names) else ({mod} | subs) & set(mods)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names} & set(mods)
        graph[name] = deps - {name}
    return graph


def cycles(graph):
    found, state = [], {}

    def visit(n, stack):
        state[n] = "open"
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == "open" and not n.startswith(d + "."):   # a package's children
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert "tinyunet.kernels.conv_relu" in graph and "tinyunet.ops.conv3x3" in graph
    assert cycles(graph) == []


FIRST_IMPORT = """
import importlib, sys
bad = []
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m == "tinyunet" or m.startswith("tinyunet.")]:
        del sys.modules[m]                     # as in a fresh interpreter: name is imported first
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:           # an optional extra (torch) that is not installed
        if (e.name or "").startswith("tinyunet"):
            bad.append(f"{name}: {e}")
    except Exception as e:
        bad.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(bad))
sys.exit(1 if bad else 0)
"""


def test_every_module_imports_on_its_own():
    """Each module imported first, as `python -c "import tinyunet.X"` would (a cycle between
    modules breaks the first import of one of them, whatever the AST graph says)."""
    r = subprocess.run([sys.executable, "-c", FIRST_IMPORT, *modules()], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_imports_go_one_way():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith(("tinyunet.ops", "tinyunet.kernels")):
            # the ops and kernels know the backend and their own kind, nothing of the pipeline
            allowed = ("tinyunet.backend", "tinyunet.ops", "tinyunet.kernels")
            assert all(d.startswith(allowed) for d in deps), (name, deps)
        if name.startswith(("tinyunet.infer", "tinyunet.volume", "tinyunet.metrics")):
            assert not deps & {"tinyunet.train", "tinyunet.optim", "tinyunet.config",
                               "tinyunet.commands"}, (name, deps)
    # the console command (__main__) runs the commands; nothing else imports them
    assert not any(d.startswith("tinyunet.commands") for n, ds in graph.items()
                   if not n.startswith(("tinyunet.commands", "tinyunet.__main__")) for d in ds)


def test_the_layout_table_names_every_module_and_folder():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    table = text[text.index("| path | what |"):text.index("## A new op")]
    for f in sorted((ROOT / "tinyunet").rglob("*.py")) + sorted((ROOT / "kernels").glob("*.py")):
        if f.stem == "__init__":
            continue
        folder = f.parent.relative_to(ROOT).as_posix()
        assert f"`{f.name}`" in table or f"`{folder}/{f.name}`" in table or \
            f"`{f.stem}`" in table, f"{f.relative_to(ROOT)} is not in CONTRIBUTING.md's layout table"
    packages = sorted(p.parent.relative_to(ROOT).as_posix() + "/"
                      for p in (ROOT / "tinyunet").rglob("__init__.py"))
    for folder in [p for p in packages if p != "tinyunet/"] + ["kernels/", "examples/",
                                                               "benchmarks/", "studies/", "docs/",
                                                               "tests/"]:
        assert f"`{folder}`" in table, folder


def test_every_package_is_installed():
    """pyproject.toml lists every folder of tinyunet that is a package (a wheel would lack
    one it does not list; the editable install used in development would hide that)."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "tinyunet").rglob("__init__.py")} | {"tinyunet.kernels"}
    assert found == listed


@pytest.mark.parametrize("example, command", [("train_isbi", "train"), ("predict", "predict"),
                                              ("evaluate", "evaluate")])
def test_an_example_shows_its_commands_title_and_usage(example, command):
    # the entry point's docstring is the command's first two paragraphs (the title and every
    # usage line), so `head examples/X.py` cannot drift from `--help`
    def doc(path):
        return ast.get_docstring(ast.parse((ROOT / path).read_text()), clean=False)
    paragraphs = doc(f"tinyunet/commands/{command}.py").split("\n\n")[:2]
    assert doc(f"examples/{example}.py").split("\n\n")[:2] == paragraphs


def test_ci_runs_the_readmes_test_command_and_the_readme_is_a_front_door():
    """The README's set-up is two commands (the main job; the tests), and .ci/run runs the
    second exactly as written; the README speaks of the code, not of the project's history."""
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set-up"):readme.index("## Segment")]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert commands == ['pip install -e . && python examples/train_isbi.py',
                        'pip install -e ".[dev]" && python -m pytest -q']
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()
    assert not re.search(r"\bissue \d+|\bsession\b|\blent\b", readme, re.I)
    assert len(readme.splitlines()) < 200
    assert not re.search(r"(?<![`\w])[A-Z][A-Z0-9]+_[A-Z0-9_]+(?![`\w])", readme), \
        "a placeholder is left in the README"                    # names in code spans are fine
