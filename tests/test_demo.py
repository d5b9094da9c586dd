"""`make demo`'s tour (python -m tinyinterp.demo) on the bundled model: prints the tour, writes the report."""

from tinyinterp.demo import main


def test_demo_tour_on_the_bundled_model(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for section in ("== attention heads", "== most selective neuron per part of speech", "k-sparse probes", "== full report"):
        assert section in out, section
    assert "L0H0: local" in out  # the bundled model's distance head
    html = (tmp_path / "report.html").read_text()
    assert "k-sparse probes" in html and "<script" in html
