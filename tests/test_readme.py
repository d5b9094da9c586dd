"""The README's plain-TransformerLens snippet works on a tinyinterp checkpoint."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    text = README.read_text()
    m = re.search(r"<!-- plain-transformerlens[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "README lost its plain-TransformerLens snippet"
    return m.group(1)


def test_plain_transformerlens_snippet(tiny_ckpt, capsys):
    code = _snippet().replace('"checkpoints/ts-1l"', repr(str(tiny_ckpt)))
    exec(compile(code, "README.md", "exec"), {})  # our own README, not user input
    assert "<|endoftext|>" in capsys.readouterr().out
