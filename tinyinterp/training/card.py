"""Generated model card (README.md) for a checkpoint, from its training.json."""

from __future__ import annotations

from typing import Any


def _fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def render_card(name: str, info: dict[str, Any]) -> str:
    cfg = info.get("model_config", {})
    ev = info.get("final_eval") or {}
    data = info.get("data", {})
    lines = [
        f"# {name}",
        "",
        "A TinyStories-style language model trained with [tinyinterp](https://pypi.org/project/tinyinterp/); "
        "it loads as a TransformerLens `HookedTransformer` with `tinyinterp.load_model(path)`.",
        "",
        "## Shape",
        "",
        "| field | value |",
        "| --- | --- |",
        f"| preset | `{info.get('config', {}).get('preset', '?')}` |",
    ]
    for key in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "act_fn", "use_attn_scale"):
        lines.append(f"| {key} | {cfg.get(key)} |")
    lines += [f"| parameters | {_fmt_int(info.get('n_params'))} |", "", "## Training", ""]
    lines += [
        f"- command: `{info.get('command', '?')}`",
        f"- machine: {info.get('machine', '?')}",
        f"- steps: {_fmt_int(info.get('step'))}, tokens seen: {_fmt_int(info.get('tokens_seen'))}, "
        f"wall time: {info.get('wall_s', 0) / 60:.1f} min",
        f"- versions: tinyinterp {info.get('versions', {}).get('tinyinterp')}, torch {info.get('versions', {}).get('torch')}, "
        f"transformer-lens {info.get('versions', {}).get('transformer_lens')}",
        "",
        "### Data",
        "",
        "| split | file | sha256 | bytes |",
        "| --- | --- | --- | --- |",
    ]
    for split in ("train", "eval"):
        for s in data.get("sources", {}).get(split, []):
            lines.append(f"| {split} | `{s['path'].split('/')[-1]}` | `{(s.get('sha256') or '')[:16]}…` | {_fmt_int(s.get('bytes'))} |")
    for split, sp in data.get("splits", {}).items():
        lines.append(f"\n{split}: {_fmt_int(sp.get('stories'))} stories, {_fmt_int(sp.get('tokens'))} tokens, {_fmt_int(sp.get('bytes'))} bytes")
    lines += ["", f"Split rule: {data.get('split', {}).get('rule')}; tokenizer sha256 `{data.get('tokenizer', {}).get('sha256', '')[:16]}…`", ""]
    lines += ["## Evaluation", ""]
    if ev:
        lines += [
            f"Validation split at the end of training: **{ev.get('val_bpb', float('nan')):.4f} bits per byte**, "
            f"{ev.get('val_loss', float('nan')):.4f} nats/token over {_fmt_int(ev.get('val_tokens'))} tokens.",
            "",
            "Reproduce on any files with `tinyinterp eval <this folder> --data FILES --json`.",
        ]
    samples = info.get("samples") or []
    if samples:
        lines += ["", "## Samples", ""]
        for s in samples:
            mode = "greedy" if s["temperature"] == 0 else f"temperature {s['temperature']}, seed {s['seed']}"
            text = s["text"].replace("\n", " ")
            lines += [f"**{s['prompt']}** ({mode}):", "", f"> {text}", ""]
    return "\n".join(lines) + "\n"
