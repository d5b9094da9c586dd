"""Regenerate tests/golden/golden.json from the bundled checkpoints.

    .venv/bin/python tests/golden/make_golden.py

Run it only when a bundled checkpoint is deliberately replaced; the golden tests then pin the
new behaviour. The stories in tests/golden/stories.txt were written for the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden.json")
STORIES = Path(__file__).with_name("stories.txt")
PROMPTS = ["Once upon a time", "Lily and Tom went to", "The little dog was"]
N_TOKENS = 30


def bundled() -> list[Path]:
    root = ROOT / "checkpoints"
    return sorted(p for p in root.iterdir() if (p / "config.json").exists()) if root.exists() else []


def compute(ckpt: Path) -> dict:
    import tinyinterp
    from tinyinterp.evaluate import evaluate_checkpoint

    model = tinyinterp.load_model(ckpt)
    gens = {p: tinyinterp.generate_text(model, p, max_new_tokens=N_TOKENS) for p in PROMPTS}
    ev = evaluate_checkpoint(ckpt, [str(STORIES)], progress=False)
    return {"greedy": gens, "eval": ev.to_json()}


def main() -> None:
    out = {p.name: compute(p) for p in bundled()}
    GOLDEN.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {GOLDEN} for {', '.join(out)}")


if __name__ == "__main__":
    main()
