"""The package layout the brief promises: no import cycles, small files, the app on the public API."""

from pathlib import Path

import pytest

from tests.support.imports import cycles, import_graph

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tinyinterp"


def test_no_import_cycle_in_the_package():
    found = cycles(import_graph(PKG))
    assert not found, f"import cycles: {found}"


@pytest.mark.parametrize("path", sorted((PKG / "analysis").rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_analysis_files_stay_small(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= 400, f"{path.relative_to(ROOT)} has {n} lines; split it (the brief: no file over ~400 lines)"


def test_cycle_finder_finds_a_cycle(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from p.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from p import a\n")
    assert cycles(import_graph(pkg)) == [["p.a", "p.b"]]


def _library_names_used(path: Path) -> set[str]:
    """``tinyinterp...`` names a file imports or reads, as dotted strings."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tinyinterp"):
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("tinyinterp")}
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "tinyinterp":
            out.add(f"tinyinterp.{node.value.attr}.{node.attr}")
    return out


@pytest.mark.parametrize("name", ["catalog.py", "live.py", "store.py", "figures.py", "sae_data.py"])
def test_explorer_uses_only_the_public_api(name):
    import tinyinterp

    used = _library_names_used(ROOT / "apps" / "explorer" / name)
    private = sorted(u for u in used if u != "tinyinterp" and not (u.count(".") == 1 and u.split(".")[1] in tinyinterp.__all__))
    assert not private, f"apps/explorer/{name} reaches past tinyinterp's exports: {private}"
