"""The package layout the brief promises: no import cycles, small files, the app on the public API."""

from pathlib import Path

import pytest

from tests.support.imports import cycles, import_graph

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tinyinterp"


def test_no_import_cycle_in_the_analysis_package():
    found = [c for c in cycles(import_graph(PKG)) if any(m.startswith("tinyinterp.analysis") for m in c)]
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
