"""The README card written beside every saved SAE (from its ``cfg.json``; no other input)."""

from __future__ import annotations

import json
from typing import Any

_QUALITY_ROWS = [
    ("l0", "L0 (active features per token)", "{:.1f}"),
    ("fve", "fraction of variance explained", "{:.3f}"),
    ("ce_loss_recovered", "CE loss recovered (vs zero-ablation)", "{:.1%}"),
    ("ce_loss_clean", "CE loss, clean (nats/token)", "{:.4f}"),
    ("ce_loss_sae", "CE loss, SAE spliced in", "{:.4f}"),
    ("ce_loss_zero_ablation", "CE loss, hook zero-ablated", "{:.4f}"),
    ("dead_fraction", "dead features (never fire on the eval tokens)", "{:.1%}"),
    ("dense_fraction", "dense features (fire on > 10% of eval tokens)", "{:.1%}"),
    ("tokens", "evaluation tokens", "{:,}"),
]


def render_card(name: str, cfg: dict[str, Any]) -> str:
    meta = cfg.get("metadata", {}) or {}
    ti = meta.get("tinyinterp", {}) or {}
    tcfg = (ti.get("fingerprint") or {}).get("config", {})
    lines = [f"# SAE `{name}`", "",
             f"A `{cfg.get('architecture')}` sparse autoencoder with {cfg.get('d_sae'):,} features on "
             f"`{meta.get('hook_name')}` (d_in {cfg.get('d_in')}) of `{meta.get('model_name')}`, trained with "
             f"SAELens {meta.get('sae_lens_training_version')} by tinyinterp. Load it with "
             "`sae_lens.SAE.load_from_disk(path)` or `tinyinterp.load_sae(path, model=...)`.", ""]
    if ti.get("command"):
        lines += ["## Training command", "", "```", ti["command"], "```", ""]
    if tcfg:
        keys = ("architecture", "d_sae", "k", "training_tokens", "batch_size", "lr", "lr_warm_up_steps",
                "lr_decay_fraction", "aux_loss_coefficient", "seed")
        lines += ["## Training", "", " | ".join(f"{k}={tcfg.get(k)}" for k in keys), ""]
    if ti:
        lines += [f"Trained for {ti.get('seconds')} s on {ti.get('threads')} torch threads (1-minute load average at the "
                  f"end: {ti.get('load_average_1min_at_end')}; the machine is shared, so wall time is inflated)"
                  + (f", resumed at {ti['resumed_at_tokens']:,} activations" if ti.get("resumed_at_tokens") else "")
                  + ".", ""]
        model = ti.get("model", {})
        lines += ["## Provenance", "", f"- model: `{model.get('checkpoint')}` (`model.safetensors` sha256 "
                  f"`{model.get('weights_sha256')}`)"]
        data = ti.get("data", {})
        lines += [f"- training data: {data.get('stories', 0):,} stories, {data.get('tokens', 0):,} tokens in "
                  f"{data.get('windows', 0):,} windows"]
        lines += [f"  - `{s['path']}` sha256 `{s['sha256']}`" for s in data.get("sources", [])]
        lines.append("")
    refit = ti.get("refit")
    if refit:
        lines += ["## Refit after training", "", f"On {refit['tokens']:,} activations of the training stories (random "
                  f"windows, seed {refit['seed']}): " + (f"JumpReLU threshold set to {refit['threshold']:.4f} (L0 "
                  f"{refit['target_l0']} on those activations), " if "threshold" in refit else "")
                  + "decoder refitted by least squares (encoder unchanged). Command:", "", "```", str(refit.get("command")),
                  "```", ""]
    quality = ti.get("quality")
    before = ti.get("quality_before_refit")
    if quality and before:
        lines += ["## Quality (evaluation stories, never trained on)", "", "| metric | as trained | after refit |",
                  "|---|---|---|"]
        lines += [f"| {label} | {fmt.format(before[key])} | {fmt.format(quality[key])} |" for key, label, fmt in _QUALITY_ROWS
                  if key in quality and key in before]
        lines += ["", "Evaluation data: " + ", ".join(f"`{s['path']}` (sha256 `{s['sha256'][:16]}…`)"
                                                    for s in quality.get("sources", [])) + f"; {quality.get('stories')} stories.", ""]
    elif quality:
        lines += ["## Quality (evaluation stories, never trained on)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {label} | {fmt.format(quality[key])} |" for key, label, fmt in _QUALITY_ROWS if key in quality]
        lines += ["", "Evaluation data: " + ", ".join(f"`{s['path']}` (sha256 `{s['sha256'][:16]}…`)"
                                                    for s in quality.get("sources", [])), ""]
    lines += ["## Raw config", "", "```json", json.dumps({k: v for k, v in cfg.items() if k != "metadata"}, indent=1),
              "```", ""]
    return "\n".join(lines)
