"""The package's layers: every module imports, nothing imports upward, and no import loops.

Layers, top to bottom: cli -> runtime / zoo -> export -> artifact | pipeline -> checkpoint ->
model / data / corrupt / config / metrics -> errors. Two wings stand on the checkpoint floor:
training (pipeline) and deployment (artifact, export, runtime, zoo); neither imports the other.
Imports inside functions count too: a local import can hide a loop, but it is still one.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import enfold

PACKAGE = Path(enfold.__file__).parent
# top-level part of ``enfold.<part>`` -> its layer; a module may import its own layer and below
LAYER = {"errors": 0, "digest": 0, "config": 1, "output_files": 1, "model": 1, "data": 1,
         "corrupt": 1, "metrics": 1, "checkpoint": 2, "pipeline": 3, "artifact": 3, "export": 4,
         "runtime": 5, "zoo": 5, "cli": 6}
# the two wings: a module of one may import nothing of the other
TRAINING = ("pipeline",)
DEPLOYMENT = ("artifact", "export", "runtime", "zoo")


def _modules() -> dict[str, Path]:
    """``enfold.x.y`` -> its file, for every module of the package."""
    found = {"enfold": PACKAGE / "__init__.py"}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("enfold", *parts))] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The enfold modules ``name`` imports, at any depth of its code."""
    return {target for target, _ in _import_lines(name, path, modules)}


def _import_lines(name: str, path: Path, modules: dict[str, Path]) -> set[tuple[str, int]]:
    """``(module, line)`` for every enfold module ``name`` imports, at any depth of its code."""
    out: set[tuple[str, int]] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from pkg import submodule" imports the submodule too
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {(t, node.lineno) for t in targets if t in modules and t != name}
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_imports(module):
    importlib.import_module(module)


def test_no_module_imports_a_higher_layer():
    modules = _modules()
    assert set(LAYER) >= {m.split(".")[1] for m in modules if m.count(".") >= 1} - {"__main__"}
    upward = []
    for name, path in modules.items():
        own = _layer(name)
        if own is None:
            continue
        for target in _imports(name, path, modules):
            theirs = _layer(target)
            if theirs is not None and theirs > own:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(upward))


def _wing(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return ("training" if parts[1] in TRAINING else
            "deployment" if parts[1] in DEPLOYMENT else None)


def _crossings(modules: dict[str, Path], root: Path = PACKAGE.parent) -> list[str]:
    """``file:line: module imports other`` for every import from one wing into the other
    (files named relative to ``root``)."""
    found = []
    for name, path in modules.items():
        own = _wing(name)
        if own is None:
            continue
        for target, line in sorted(_import_lines(name, path, modules)):
            theirs = _wing(target)
            if theirs is not None and theirs != own:
                where = path.relative_to(root)
                found.append(f"{where}:{line}: {name} ({own}) imports {target} ({theirs})")
    return sorted(found)


def test_deployment_never_imports_training():
    """artifact / export / runtime / zoo import nothing of enfold.pipeline (nor the reverse), at
    any depth: checkpoints, their models and the PSNR are on the floor below both wings."""
    crossings = _crossings(_modules())
    assert not crossings, ("imports between the wings (move what both need to enfold.checkpoint "
                           "or another ground-floor module):\n" + "\n".join(crossings))


def test_the_wing_check_sees_a_function_local_import(tmp_path):
    """The wing check can fail: a deployment module's import of the training wing inside a
    function is named with its file and line."""
    package = tmp_path / "enfold"
    (package / "runtime").mkdir(parents=True)
    (package / "pipeline").mkdir()
    (package / "pipeline" / "trainer.py").write_text("")
    (package / "runtime" / "hidden.py").write_text(
        "import os\n\n\ndef f():\n    from enfold.pipeline import trainer\n")
    modules = {"enfold.runtime.hidden": package / "runtime" / "hidden.py",
               "enfold.pipeline": package / "pipeline" / "__init__.py",
               "enfold.pipeline.trainer": package / "pipeline" / "trainer.py"}
    (package / "pipeline" / "__init__.py").write_text("")
    assert _crossings(modules, tmp_path) == [
        "enfold/runtime/hidden.py:5: enfold.runtime.hidden (deployment) imports enfold.pipeline "
        "(training)",
        "enfold/runtime/hidden.py:5: enfold.runtime.hidden (deployment) imports "
        "enfold.pipeline.trainer (training)"]


def test_no_import_loops():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # a package's __init__ gathers its submodules; that edge alone is not a loop
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    loops, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                loops.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not loops, "import loops:\n" + "\n".join(loops)


def test_the_checks_see_a_loop_and_an_upward_import(tmp_path):
    """The checks can fail: a module that imports upward and a loop are both found."""
    modules = {"enfold.model.a": tmp_path / "a.py", "enfold.model.b": tmp_path / "b.py",
               "enfold.runtime.c": tmp_path / "c.py"}
    modules["enfold.model.a"].write_text("def f():\n    from enfold.model import b\n")
    modules["enfold.model.b"].write_text("from enfold.model.a import f\n"
                                         "import enfold.runtime.c\n")
    modules["enfold.runtime.c"].write_text("")
    a = _imports("enfold.model.a", modules["enfold.model.a"], modules)
    b = _imports("enfold.model.b", modules["enfold.model.b"], modules)
    assert a == {"enfold.model.b"} and "enfold.model.a" in b
    assert _layer("enfold.runtime.c") > _layer("enfold.model.b")


def test_opening_a_session_imports_neither_the_export_nor_the_stages():
    """enfold.runtime.load reads sidecars and runs artifacts from the artifact layer: no
    make_fx tracing code and nothing of the training wing comes along."""
    from probes import imported_after

    assert imported_after("import enfold.runtime", ("enfold.export", "enfold.pipeline")) == []
