import json

import pytest

from tinyinterp.data.normalize import normalize_story
from tinyinterp.data.readers import iter_stories, load_stories, resolve_sources
from tinyinterp.errors import DataError


def test_txt_release_format(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("First story.\nSecond line.\n<|endoftext|>\nSecond story.\n<|endoftext|>\n\n<|endoftext|>\n")
    assert load_stories(str(p)) == ["First story.\nSecond line.", "Second story."]


def test_jsonl_json_folder_glob(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "One."}) + "\n\n" + json.dumps({"text": "Two."}) + "\n")
    (tmp_path / "b.json").write_text(json.dumps([{"text": "Three."}, "Four."]))
    (tmp_path / "ignored.csv").write_text("x")
    assert load_stories(str(tmp_path)) == ["One.", "Two.", "Three.", "Four."]
    assert load_stories(str(tmp_path / "*.json")) == ["Three.", "Four."]


def test_mojibake_repaired_and_dedupe(tmp_path):
    p = tmp_path / "m.txt"
    p.write_text("She said, â€œHi!â€\x9d\n<|endoftext|>\nShe said, \u201cHi!\u201d\n<|endoftext|>\n", encoding="utf-8")
    got = load_stories(str(p))
    assert got[0] == "She said, \u201cHi!\u201d"
    assert len(load_stories(str(p), dedupe=True)) == 1
    assert normalize_story("  a \r\nb\n\n\n\nc ") == "a\nb\n\nc"


@pytest.mark.parametrize("content,match", [
    (b"", "no stories"),
    (b"   \n\n<|endoftext|>\n  \n", "no stories"),
    (b"\x00\x01\x02binary", "binary"),
    (b"caf\xe9 au lait\n", "not valid UTF-8"),
])
def test_bad_corpora_one_line_errors(tmp_path, content, match):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(DataError, match=match) as e:
        load_stories(str(p))
    assert "\n" not in str(e.value)


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        resolve_sources(str(tmp_path / "nope.txt"))
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(DataError, match="unsupported"):
        resolve_sources(str(tmp_path / "x.csv"))
    with pytest.raises(DataError, match="glob matches no files"):
        resolve_sources(str(tmp_path / "*.txt"))


def test_bad_json(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "ok"}\n{"nope": 1}\n')
    with pytest.raises(DataError, match="line 2 has no string field 'text'"):
        load_stories(str(tmp_path / "a.jsonl"))


def test_enormous_story_is_chunked(tmp_path):
    p = tmp_path / "big.txt"
    line = "The cat sat on the mat and it was a very good day for the cat. " * 20 + "\n"
    p.write_text(line * 400)  # ~500 kB without a separator
    pieces = list(iter_stories(str(p)))
    assert len(pieces) > 1
    assert max(len(x) for x in pieces) <= 200_000


def test_hf_offline_gives_clear_error(monkeypatch):
    import datasets

    def boom(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(DataError, match="are you offline"):
        load_stories("hf:roneneldan/TinyStories:validation")


def test_hf_reader_streams_text(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, streaming: iter([{"text": f"{name} {split}"}]))
    assert load_stories("hf:roneneldan/TinyStoriesV2:validation") == ["roneneldan/TinyStoriesV2 validation"]
