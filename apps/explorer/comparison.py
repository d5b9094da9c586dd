"""Two models side by side: which sides there are, and the tables the Compare page draws (no Streamlit here).

A *side* is a checkpoint of the picker or one of its training snapshots (``snapshots/step_N``),
so the page compares two models (``ts-1l`` vs ``ts-4l``, a bundled model vs a Hugging Face
folder) or two moments of one training run. Every table has one row per (model, …) so the
page can draw it as a grouped chart and as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from apps.explorer import catalog, links
from tinyinterp import LABEL_COLORS

LABELS = tuple(LABEL_COLORS)
# Universal Dependencies' grouping of the UPOS tags (universaldependencies.org/u/pos).
UPOS_CATEGORY = {
    **dict.fromkeys(("ADJ", "ADV", "INTJ", "NOUN", "PROPN", "VERB"), "open class"),
    **dict.fromkeys(("ADP", "AUX", "CCONJ", "DET", "NUM", "PART", "PRON", "SCONJ"), "closed class"),
    **dict.fromkeys(("PUNCT", "SYM", "X"), "other"),
}


@dataclass(frozen=True)
class Side:
    """One model on the Compare page: a checkpoint, or a training snapshot of it."""

    entry: catalog.CheckpointEntry
    step: int | None = None  # a snapshot's training step; None: the checkpoint itself
    folder: Path | None = None  # the snapshot's folder (None: the checkpoint's)

    @property
    def path(self) -> Path:
        return self.folder or self.entry.path

    @property
    def label(self) -> str:
        return self.entry.label if self.step is None else f"{self.entry.name} · snapshot at step {self.step:,}"

    @property
    def short(self) -> str:
        return self.entry.name if self.step is None else f"{self.entry.name}@{self.step}"

    def url_id(self, names: dict[str, Path]) -> str:
        return links.side_id(links.model_id(self.entry.path, names), self.step)


def list_sides(entries: list[catalog.CheckpointEntry]) -> list[Side]:
    """Every checkpoint, each followed by its snapshots (by step)."""
    out = []
    for e in entries:
        out.append(Side(e))
        out += [Side(e, step, folder) for step, folder in catalog.list_snapshots(e.path)]
    return out


def find_side(sides: list[Side], wanted: str) -> Side | None:
    """The side a URL value (``ts-4l``, ``ts-4l@801``, ``/path/to/ckpt@12``) names."""
    model, step = links.split_side(wanted)
    entry = catalog.find_entry([s.entry for s in sides if s.step is None], model)
    if entry is None:
        return None
    return next((s for s in sides if s.entry == entry and s.step == step), None)


def head_labels(heads: Any, model: str) -> pd.DataFrame:
    """Rows (model, layer, label, heads): how many heads of each layer got each label."""
    rows = []
    if heads is not None:
        layers = sorted({r.layer for r in heads.records})
        for layer in layers:
            got = [r.label for r in heads.records if r.layer == layer]
            rows += [{"model": model, "layer": layer, "label": lab, "heads": got.count(lab)} for lab in LABELS]
    return pd.DataFrame(rows, columns=["model", "layer", "label", "heads"])


def pos_neurons(neurons: Any, model: str) -> pd.DataFrame:
    """Rows (model, tag, category, pos_neurons): neurons whose row for the tag is ``pos`` (selective beyond
    token identity, held out; see the Neurons page)."""
    per_tag = ((neurons.summary if neurons is not None else {}) or {}).get("pos_per_tag") or {}
    rows = [{"model": model, "tag": tag, "category": UPOS_CATEGORY.get(tag, "other"), "pos_neurons": int(n)}
            for tag, n in sorted(per_tag.items())]
    return pd.DataFrame(rows, columns=["model", "tag", "category", "pos_neurons"])


def probe_accuracy(probes: Any, model: str) -> pd.DataFrame:
    """Rows (model, site, kind, layer, accuracy, control, selectivity) of the UPOS probes, embedding first."""
    rows = []
    for r in (probes.rows if probes is not None else []):
        rows.append({"model": model, "site": r.get("site"), "kind": r.get("kind"), "layer": r.get("layer"),
                     "accuracy": r.get("accuracy"), "control": r.get("control_accuracy"),
                     "selectivity": r.get("selectivity")})
    df = pd.DataFrame(rows, columns=["model", "site", "kind", "layer", "accuracy", "control", "selectivity"])
    return df.sort_values(["layer", "kind"], kind="stable").reset_index(drop=True)


def side_by_side(a: pd.DataFrame, b: pd.DataFrame, index: list[str], value: str, names: tuple[str, str]) -> pd.DataFrame:
    """One row per ``index`` value, one ``value`` column per model (missing: empty)."""
    both = pd.concat([a, b], ignore_index=True)
    if both.empty:
        return pd.DataFrame(columns=[*index, *names])
    wide = both.pivot_table(index=index, columns="model", values=value, aggfunc="first").reset_index()
    for n in names:
        if n not in wide:
            wide[n] = None
    return wide[[*index, *names]]


def recorded_bpb(side: Side) -> dict[str, Any] | None:
    """The validation bits per byte its training logged: the checkpoint's final evaluation, or for a
    snapshot the evaluation at exactly its step (None when training did not evaluate there)."""
    if side.step is None:
        card = catalog.read_card(side.path)
        if card["val_bpb"] is None:
            return None
        return {"val_bpb": card["val_bpb"], "val_tokens": card.get("val_tokens"), "step": card["steps"]}
    metrics = catalog.read_metrics(side.entry.path)
    if metrics.empty or "val_bpb" not in metrics:
        return None
    at = metrics.dropna(subset=["val_bpb"])
    at = at[at["step"] == side.step]
    if at.empty:
        return None
    row = at.iloc[0]  # the first evaluation at that step: the periodic one
    return {"val_bpb": float(row["val_bpb"]), "val_tokens": int(row.get("val_tokens") or 0) or None, "step": side.step}
