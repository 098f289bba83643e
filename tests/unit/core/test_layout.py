"""Layout for many papers: one package per paper under ``lab.methods``, no paper importing another, no import
circles inside a paper, schemas found without importing a paper's wiring, and ``lab.sections`` below ``lab.config``.

Runtime checks run in fresh subprocesses (this process has imported everything already); static checks read every
``import`` statement, lazy ones inside functions included, so an import that only runs on some path is caught too.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lab.methods
from tests.conftest import REPO

METHODS = Path(lab.methods.__path__[0])
PAPERS = sorted(m.name for m in pkgutil.iter_modules(lab.methods.__path__) if m.ispkg)


def submodules(paper: str) -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(METHODS / paper)]))


def loaded_after(code: str) -> list[str]:
    """``sorted(sys.modules)`` of a fresh interpreter (cwd: the repo) after running ``code``."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def imported_names(path: Path, package: str) -> set[str]:
    """Every module an ``import`` / ``from ... import`` in ``path`` names (relative imports resolved; for
    ``from pkg import name`` both ``pkg`` and ``pkg.name``, since ``name`` may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def test_there_are_paper_packages_and_no_flat_paper_modules():
    assert {"first", "nanovdr", "laser", "specontext"} <= set(PAPERS)
    flat = [m.name for m in pkgutil.iter_modules(lab.methods.__path__) if not m.ispkg]
    assert not flat, f"lab.methods holds flat modules {flat}: one package per paper (lab/methods/<paper>/)"


@pytest.mark.parametrize("paper", PAPERS)
def test_a_paper_package_has_a_schema_and_a_cheap_init(paper):
    assert "config" in submodules(paper), f"lab/methods/{paper}/config.py: the paper's params schema"
    init = ast.parse((METHODS / paper / "__init__.py").read_text())
    assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in init.body), (
        f"lab/methods/{paper}/__init__.py: a docstring only (importing the package stays cheap)")
    cfg = imported_names(METHODS / paper / "config.py", f"lab.methods.{paper}")
    assert not {n for n in cfg if n == "lab.config" or n.startswith("lab.methods")}, (
        f"lab/methods/{paper}/config.py must not import lab.config nor any wiring: {sorted(cfg)}")
    assert not {n.split(".")[0] for n in cfg} & {"torch", "transformers", "numpy", "pandas"}, "no ML imports"
    source = (METHODS / paper / "config.py").read_text()
    assert f'SECTION = "{paper}"' in source and "SCHEMA = " in source


@pytest.mark.parametrize("paper", PAPERS)
def test_importing_a_paper_loads_no_other_paper(paper):
    modules = [f"lab.methods.{paper}.{m}" for m in submodules(paper)]
    loaded = loaded_after("\n".join(f"import {m}" for m in modules))
    assert set(modules) <= set(loaded)
    others = [m for m in loaded for q in PAPERS if q != paper and (m == f"lab.methods.{q}" or
                                                                   m.startswith(f"lab.methods.{q}."))]
    assert not others, f"importing lab.methods.{paper}.* loads another paper: {others}"


@pytest.mark.parametrize("paper", PAPERS)
def test_no_paper_imports_another_and_no_circle_inside_a_paper(paper):
    package = f"lab.methods.{paper}"
    graph: dict[str, set[str]] = {}
    for sub in submodules(paper):
        names = imported_names(METHODS / paper / f"{sub}.py", package)
        others = sorted(n for n in names for q in PAPERS if q != paper and (n == f"lab.methods.{q}" or
                                                                             n.startswith(f"lab.methods.{q}.")))
        assert not others, f"{package}.{sub} imports another paper: {others}"
        graph[sub] = {n.split(".")[3] for n in names if n.startswith(package + ".")} & set(submodules(paper))

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            assert nxt not in path, f"import circle in {package}: {' -> '.join(path + [nxt])}"
            visit(nxt, path + [nxt])

    for sub in graph:
        visit(sub, [sub])


@pytest.mark.parametrize("paper, schema", [("first", "FirstConfig"), ("laser", "LaserConfig"),
                                           ("specontext", "SpecConfig")])
def test_loading_a_paper_section_imports_only_its_schema(paper, schema):
    loaded = loaded_after(f"import lab.config\ncfg = lab.config.load({paper!r}, 'tiny')\n"
                          f"assert type(cfg).__name__ == {schema!r}")
    assert f"lab.methods.{paper}.config" in loaded
    assert not [m for m in loaded if m.startswith("lab.methods.") and not m.startswith(f"lab.methods.{paper}")
                and m != "lab.methods"], "another paper's package was imported"
    assert not [m for m in loaded if m.startswith(f"lab.methods.{paper}.") and m != f"lab.methods.{paper}.config"]
    assert "torch" not in loaded


def test_the_kv_layer_sits_below_the_methods():
    for path in sorted((REPO / "src" / "lab" / "kv").glob("*.py")):
        names = imported_names(path, "lab.kv")
        assert not [n for n in names if n.startswith("lab.methods")], f"{path.name} imports a method: {sorted(names)}"


def test_sections_sits_below_config():
    names = imported_names(REPO / "src" / "lab" / "sections.py", "lab")
    assert not [n for n in names if n.startswith("lab")], f"lab.sections imports {sorted(names)}"
    loaded = loaded_after("import lab.sections")
    assert [m for m in loaded if m == "lab" or m.startswith("lab.")] == ["lab", "lab.sections"]
