"""Rebuild checkpoints/README.md: one row per bundled model, every figure recomputed.

    .venv/bin/python checkpoints/make_index.py

Val bits per byte is recomputed here with `tinyinterp eval` on the two official-validation
files in ../shared/data/tinystories (the evaluation set; never trained on).
"""

from __future__ import annotations

import json
from pathlib import Path

from tinyinterp.evaluate import evaluate_checkpoint

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "tinystories"
EVAL = ["EinfachSim__muGPT__tinystories_val.txt", "yuninxia__moe-routing-bench__tinystories_val.txt"]
# Runs that were stopped and continued with --resume (to share the 2-core CPU between the two runs
# and finish inside one session); the model card records the last command only.
LEGS = {
    "ts-1l": "Trained in two legs: the command below with `--max-tokens 18000000` (without `--resume`, "
             "`--overwrite` instead) to step 1750, then resumed with the shorter budget shown, which "
             "recomputed the cosine schedule for the remaining 143 steps.",
    "ts-4l": "Trained in three legs: the command below with `--max-tokens 20000000` and `--overwrite` to "
             "step 250 (stopped to free a core), resumed with `--max-tokens 20000000 --resume` to step 1250, then "
             "resumed with the shorter budget shown (cosine schedule recomputed for the remaining steps).",
}
PURPOSE = {
    "ts-1l": "one layer, 8 heads: the paper's interpretability setting (local vs semantic heads, POS neurons)",
    "ts-4l": "four layers: head roles and neurons by depth; 8 log-spaced training snapshots",
}


def main() -> None:
    rows, details = [], []
    for ckpt in sorted(p for p in HERE.iterdir() if (p / "config.json").exists()):
        info = json.loads((ckpt / "training.json").read_text())
        cfg = info["model_config"]
        ev = evaluate_checkpoint(ckpt, [str(SHARED / f) for f in EVAL], progress=False)
        shape = f"{cfg['n_layers']}L d{cfg['d_model']} {cfg['n_heads']}h×{cfg['d_head']} mlp{cfg['d_mlp']} ctx{cfg['n_ctx']}"
        snaps = len(list((ckpt / "snapshots").glob("step_*"))) if (ckpt / "snapshots").exists() else 0
        rows.append(f"| [`{ckpt.name}`]({ckpt.name}/README.md) | {shape} | {info['n_params']:,} | **{ev.bits_per_byte:.4f}** "
                    f"| {ev.loss:.4f} | {info['tokens_seen']:,} | {info['wall_s'] / 60:.0f} min | {snaps} | {PURPOSE.get(ckpt.name, '')} |")
        details.append(f"### {ckpt.name}\n\n{LEGS.get(ckpt.name, '')}\n\n```\n{info['command']}\n```\n\n"
                       f"Machine: {info['machine']}. Data fingerprint `{info['data']['fingerprint'][:16]}`; "
                       f"tokenizer sha256 `{info['data']['tokenizer']['sha256'][:16]}`. "
                       f"Evaluation: {ev.tokens:,} tokens / {ev.bytes:,} bytes / {ev.stories} stories.\n")
    text = [
        "# Bundled checkpoints",
        "",
        "Trained with `tinyinterp train` on the TinyStories text in `../shared/data/tinystories/` **without** the two "
        "official-validation files (`EinfachSim__muGPT__tinystories_val.txt`, `yuninxia__moe-routing-bench__tinystories_val.txt`), "
        "which are the evaluation set. Weights are stored in fp16 (loading restores fp32; the parity tests hold). "
        "Each folder's `README.md` is its model card (data hashes, samples), `training.json` its full provenance, "
        "`metrics.jsonl` its training curve.",
        "",
        "| name | shape | parameters | val bits/byte | val nats/token | tokens seen | wall time | snapshots | for |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Val = the two evaluation files, recomputed by `python checkpoints/make_index.py` "
        "(`tinyinterp eval checkpoints/NAME --data <the two files> --json`). Targets: one-layer ≤ 1.08, multi-layer ≤ 1.00. "
        "Reference points: TinyStories-1M reports 0.707 (trained on all 2.1M stories), llama2.c's 260K model ≈ 0.91.",
        "",
        'Both models were trained before every evaluation read the same tokens: in their `metrics.jsonl` the evaluations during training read the first 99,840 validation tokens and the last one all 198,704, so joined into one curve they seem to jump at the end (ts-4l: 0.900 → 0.963). The explorer plots that last evaluation as a separate, labelled marker; runs trained now evaluate on the same tokens throughout and add the whole split as its own record (`TrainConfig.eval_tokens`). Regenerating the bundled curves would mean retraining.',
        "",
        "## How each was trained",
        "",
        *details,
    ]
    (HERE / "README.md").write_text("\n".join(text) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
