"""Everything the explorer shows from files (or from a link) is text, never markup.

A checkpoint whose analysis files carry HTML and Markdown in every string the pages print:
max-activating example words and tokens (rendered with ``unsafe_allow_html``), head rule
texts and categories, ablation tags, training samples, file names, a link's parameters.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import pytest

from apps.explorer import readings
from tests.explorer.test_links import open_link

HTML = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"
IMAGE = "![t](http://evil.example/t.png)"


def every_text(at) -> list[tuple[str, bool]]:
    """(source text, rendered as HTML?) of every Markdown-rendering element on the page (sidebar included)."""
    out = [(m.value, bool(m.proto.allow_html)) for m in at.markdown]
    for group in (at.caption, at.title, at.header, at.subheader, at.info, at.warning, at.error, at.sidebar.warning):
        out += [(e.value, False) for e in group]
    return out


UNESCAPED = re.compile(r"(?<!\\)<(?:img|script)|(?<!\\)!(?<!\\)\[|(?<!\\)\]\(")  # a tag, an image, a link


def assert_inert(at) -> None:
    """HTML bodies hold no tag, image or link from the files; Markdown bodies hold them only backslash-escaped."""
    for text, html in every_text(at):
        if html:
            for bad in ("<img", "<script", "![t]", "](http"):
                assert bad not in text, (bad, text[:300])
        else:
            assert not UNESCAPED.search(text), text[:300]


@pytest.fixture
def hostile_root(explorer_root, tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    ckpt = root / "evil"
    shutil.copytree(explorer_root / "tiny-1l", ckpt, ignore=shutil.ignore_patterns("snapshots"))
    a = ckpt / "analysis"
    examples = json.loads((a / "neuron_examples.json").read_text())
    key = next(k for k, v in examples.items() if v)
    first = examples[key][0]
    first.update(word=HTML, tag=SCRIPT, text=[HTML, IMAGE, *first["text"][2:]], activation="<b>9</b>")
    examples[key].append({"text": "not a list", "acts": 3})
    (a / "neuron_examples.json").write_text(json.dumps(examples))
    heads = json.loads((a / "heads.json").read_text())
    for h in heads:
        h.update(reason=f"{IMAGE} {HTML}", top_category=SCRIPT)
    (a / "heads.json").write_text(json.dumps(heads))
    ablation = json.loads((a / "ablation.json").read_text())
    for row in ablation:
        row["tag"] = IMAGE
    (a / "ablation.json").write_text(json.dumps(ablation))
    info = json.loads((ckpt / "training.json").read_text())
    info["samples"] = [{"temperature": "<i>hot</i>", "text": f"{IMAGE} {HTML}"}]
    info["data"]["splits"] = {IMAGE: {"stories": "<b>1</b>", "tokens": 2, "bytes": 3}}
    (ckpt / "training.json").write_text(json.dumps(info))
    manifest = json.loads((ckpt / "manifest.json").read_text())  # a consistent (if hostile) checkpoint
    manifest["sha256"]["training.json"] = hashlib.sha256((ckpt / "training.json").read_bytes()).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    complete = a / "complete.json"  # a consistent (if hostile) analysis: its completion marker lists these files
    if complete.is_file():
        marker = json.loads(complete.read_text())
        for name in ("neuron_examples.json", "heads.json", "ablation.json"):
            data = (a / name).read_bytes()
            marker["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        complete.write_text(json.dumps(marker))
    monkeypatch.setenv("TINYINTERP_EXPLORER_ROOT", str(root))
    monkeypatch.delenv("TINYINTERP_EXPLORER_CKPT", raising=False)
    layer, neuron = key.split(".")
    return f"L{layer}N{neuron}"


def test_neuron_examples_from_the_file_are_escaped(hostile_root):
    at = open_link("views/neurons.py", model="evil", neuron=hostile_root)
    assert not at.exception, [e.value for e in at.exception]
    blocks = [t for t, html in every_text(at) if html and "max activation" in t]
    assert blocks and any("&lt;img src=x onerror=alert" in b and "&lt;script&gt;" in b for b in blocks)
    assert any("max activation n/a" in b for b in blocks)  # a non-number activation is not printed as markup
    assert any("could not be read" in c.value for c in at.caption)  # the malformed example is skipped, said so
    assert_inert(at)


@pytest.mark.parametrize("page", ["", "views/heads.py", "views/compare.py"])
def test_other_pages_and_links_print_file_text_as_text(hostile_root, page):
    at = open_link(page, model="evil", a="evil", b=f"{IMAGE}{HTML}", head=f"{HTML}")
    assert not at.exception, [e.value for e in at.exception]
    assert_inert(at)
    if page == "views/heads.py":  # the rule text is there, as escaped text
        assert any(("Rule that fired" in c.value or "Axis values" in c.value) and "\\!\\[t\\]" in c.value
                   for c in at.caption)


def test_md_and_num():
    assert readings.md("- a*b*") == "\\- a\\*b\\*"
    assert readings.md("x\ny" + "z" * 300, limit=10) == "x yzzzzzz…"
    assert readings.num("1e400") == "n/a" and readings.num(True) == "n/a" and readings.num("0.25", ".0%") == "25%"


def test_an_analysis_edited_after_it_was_written_is_one_line_not_a_traceback(hostile_root, tmp_path):
    a = tmp_path / "checkpoints" / "evil" / "analysis"
    if not (a / "complete.json").is_file():
        pytest.skip("the explorer's analysis predates the completion marker")
    (a / "heads.json").write_text((a / "heads.json").read_text() + " ")  # no longer the file the analysis wrote
    at = open_link("views/heads.py", model="evil")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "changed since" in errors[0] and "tinyinterp analyze" in errors[0]
