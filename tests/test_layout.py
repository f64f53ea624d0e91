"""The package layout: imports point down, never in a circle, never at a private name.

Every module of ``python/simdex`` is parsed (no import is executed) and every
``import`` in it -- module level, inside functions (lazy) and under
``TYPE_CHECKING`` -- becomes an edge of the import graph. The floors, lowest first:

0. ``simdex._runtime``, ``simdex._validate``, ``simdex._optional`` (and the extensions);
1. ``simdex.index`` (base, exact, lsh, gpu, io);
2. ``simdex.evaluate`` and ``simdex.embed`` (neither imports the other);
3. ``simdex.learn``;
4. ``simdex.apps``;
5. ``simdex`` itself (``__init__``: the lazy public names and faces).

A module may import from its own package or from a lower floor. The checker is
tested on small made-up packages first, so that a broken checker cannot pass.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import simdex

SOURCE = Path(__file__).resolve().parents[1] / "python" / "simdex"
PACKAGE = SOURCE if SOURCE.is_dir() else Path(simdex.__file__).parent

FLOORS: dict[str, int] = {
    "_runtime": 0,
    "_validate": 0,
    "_optional": 0,
    "_log": 0,  # the simdex logger
    "_threadpool": 0,  # threadpoolctl controller of the native pool
    "_core": 0,  # the C++ extension
    "_cuda": 0,  # the CUDA extension
    "index": 1,
    "evaluate": 2,
    "embed": 2,
    "learn": 3,
    "apps": 4,
    "__main__": 5,  # ``python -m simdex`` / the ``simdex`` command: above everything, like simdex itself
}
EXTENSIONS = {"simdex._core", "simdex._cuda"}


# --------------------------------------------------------------------------- the checker
def module_sources(root: Path, name: str = "simdex") -> dict[str, str]:
    """Dotted module name -> source text, for every .py file under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([name, *parts])] = path.read_text(encoding="utf-8")
    return out


def _is_package(module: str, sources: Mapping[str, str]) -> bool:
    return any(other.startswith(module + ".") for other in sources)


def imports(module: str, source: str, sources: Mapping[str, str]) -> Iterator[tuple[int, str, str | None]]:
    """``(line, imported module, imported name or None)`` for every import in ``source``."""
    known = set(sources) | EXTENSIONS
    package = module if _is_package(module, sources) else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:  # `from simdex.index import lsh`: the module itself
                    yield node.lineno, sub, None
                else:
                    yield node.lineno, target, alias.name


def private_attribute_uses(module: str, source: str, sources: Mapping[str, str]) -> Iterator[str]:
    """``name._private`` where ``name`` is bound to another simdex module in ``source``."""
    known = set(sources) | EXTENSIONS
    bound: dict[str, str] = {}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("simdex"):
                    bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "simdex"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simdex"):
            for alias in node.names:
                if f"{node.module}.{alias.name}" in known:
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and bound[node.value.id] != module
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            yield f"{module}:{node.lineno} uses the private name {node.attr} of {bound[node.value.id]}"


def floor(module: str) -> tuple[int, str]:
    """(floor, package) of a simdex module; the top-level ``simdex`` is above everything."""
    parts = module.split(".")
    if len(parts) == 1:
        return 5, "simdex"
    if parts[1] not in FLOORS:
        raise KeyError(f"{module}: not in any floor of the layout (add it to FLOORS)")
    return FLOORS[parts[1]], "ground" if FLOORS[parts[1]] == 0 else parts[1]


def check_layout(sources: Mapping[str, str]) -> list[str]:
    """Every violation of the layout rules, as readable lines (empty when all is well)."""
    problems: list[str] = []
    known = set(sources) | EXTENSIONS
    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module, source in sources.items():
        level, package = floor(module)
        for line, target, name in imports(module, source, sources):
            if target != "simdex" and not target.startswith("simdex."):
                continue
            where = f"{module}:{line}"
            if target not in known:
                problems.append(f"{where} imports {target}, which is no module of the package")
                continue
            if name is not None and name.startswith("_") and not name.startswith("__"):
                problems.append(f"{where} imports the private name {name} from {target}")
            if target == module or module.startswith(target + "."):
                continue  # a module's own package __init__ (run by Python anyway)
            t_level, t_package = floor(target)
            if t_package != package and t_level >= level:
                problems.append(
                    f"{where} imports {target} (floor {t_level}, {t_package}) from floor {level} "
                    f"({package}): imports must point down"
                )
            if target in graph:
                graph[module].add(target)
        problems += private_attribute_uses(module, source, sources)
    problems += [f"import circle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component with more than one module (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# --------------------------------------------------------------------------- the checker, checked
def test_checker_finds_a_lazy_circle():
    sources = {
        "simdex": "",
        "simdex.index": "",
        "simdex.index.a": "def f():\n    from simdex.index import b\n",
        "simdex.index.b": "from simdex.index.a import f\n",
    }
    assert check_layout(sources) == ["import circle: simdex.index.a -> simdex.index.b -> simdex.index.a"]


def test_checker_finds_upward_sideways_and_private_imports():
    sources = {
        "simdex": "",
        "simdex._validate": "from simdex.index import base\n",
        "simdex.index": "",
        "simdex.index.base": "from simdex._validate import _secret\n",
        "simdex.embed": "",
        "simdex.embed.e": "import simdex.evaluate.m\n",
        "simdex.evaluate": "",
        "simdex.evaluate.m": "from . import n\n",
        "simdex.evaluate.n": "from simdex.nowhere import x\n",
        "simdex.evaluate.o": "from simdex.evaluate import n as m\nm._hidden()\n",
    }
    problems = check_layout(sources)
    assert any("simdex._validate:1 imports simdex.index.base" in p and "point down" in p for p in problems)
    assert any("simdex.embed.e:1 imports simdex.evaluate.m" in p for p in problems)
    assert any("private name _secret" in p for p in problems)
    assert any("simdex.nowhere, which is no module" in p for p in problems)
    assert any(
        "simdex.evaluate.o:2 uses the private name _hidden of simdex.evaluate.n" in p for p in problems
    )
    assert any(p.startswith("import circle: simdex._validate -> simdex.index.base") for p in problems)
    assert not any("simdex.evaluate.m:1" in p for p in problems)  # relative import inside a package: fine


def test_checker_accepts_a_clean_layout():
    sources = {
        "simdex": "import importlib\n",
        "simdex._validate": "import numpy\n",
        "simdex.index": "from simdex.index.base import Index\n",
        "simdex.index.base": "from simdex._validate import as_matrix\n",
        "simdex.apps": "",
        "simdex.apps.x": "def f():\n    from simdex.index import base\n",
    }
    assert check_layout(sources) == []


# --------------------------------------------------------------------------- the package
def test_package_imports_point_down_without_circles():
    sources = module_sources(PACKAGE)
    assert "simdex.index.base" in sources and len(sources) > 20, sorted(sources)
    problems = check_layout(sources)
    assert not problems, "\n".join(problems)


def test_every_module_has_a_floor():
    for module in module_sources(PACKAGE):
        floor(module)


FACES = {
    "models": "simdex.learn.models",
    "layers": "simdex.learn.layers",
    "losses": "simdex.learn.losses",
    "samplers": "simdex.learn.samplers",
    "metrics": "simdex.evaluate.metrics",
    "plots": "simdex.evaluate.plots",
    "visualization": "simdex.evaluate.plots",
    "calibration": "simdex.evaluate.calibration",
    "matchers": "simdex.evaluate.matchers",
    "embeddings": "simdex.embed.embeddings",
    "export": "simdex.embed.export",
    "neardup": "simdex.apps.neardup",
    "lsh": "simdex.index.lsh",
    "gpu": "simdex.index.gpu",
}


def test_faces_are_the_role_modules():
    """A fresh interpreter reaches each face as an attribute and as an import path, as one module."""
    code = (
        "import importlib, simdex\n"
        f"for face, home in {FACES!r}.items():\n"
        "    attr = getattr(simdex, face)\n"
        "    imported = importlib.import_module('simdex.' + face)\n"
        "    real = importlib.import_module(home)\n"
        "    assert attr is imported is real, (face, attr, imported, real)\n"
        "    assert real.__spec__.name == home, real.__spec__\n"
        "from simdex.losses import MultiSimilarityLoss\n"
        "from simdex.index import ExactIndex, Index, LSHIndex, knn, load_index\n"
        "import simdex.gpu as g\n"
        "assert g.cuda_available in (simdex.cuda_available,)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
