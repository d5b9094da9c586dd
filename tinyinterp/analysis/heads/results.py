"""Results of :func:`~tinyinterp.analysis.heads.classify.classify_heads`: one record per head, JSON/CSV round trip.

``HeadResults.save(dir)`` writes ``heads.json`` (a list of per-head objects, each with
``layer``, ``head``, ``label``, every score, the evidence and the head's offset profile),
``heads.csv`` (one row per head: scalar scores, and per category ``lift_*``, ``p_*``,
``mass_*`` columns) and ``heads_meta.json`` (config and corpus summary).
``HeadResults.load(dir)`` reads them back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from tinyinterp.analysis.results_io import jsonable, read_result, read_result_json, write_result_json
from tinyinterp.errors import DataError

HEADS_JSON, HEADS_META_JSON = "heads.json", "heads_meta.json"
LABELS = ("local", "semantic", "local+semantic", "sink", "local+sink", "semantic+sink", "local+semantic+sink", "mixed")
"""Every label :func:`~tinyinterp.analysis.heads.axes.label_heads` can give: the attributes that pass, joined by ``+``."""
PATTERN_LABELS = ("local", "semantic", "sink", "mixed")  # the older pattern-only rule (``pattern_label``)
SCALAR_SCORES = ("positional_r2", "profile_r2", "content_js", "mean_distance", "near_mass", "prev_token", "entropy",
                 "entropy_norm", "bos_mass", "tl_previous_token", "tl_duplicate_token", "tl_induction")


@dataclass
class HeadRecord:
    """Scores, label and evidence of one attention head (``None`` where a score is undefined)."""

    layer: int
    head: int
    label: str  # one of LABELS: the attributes whose axis passes its null-derived threshold (tinyinterp.analysis.heads.axes)
    reason: str  # each axis's value against its threshold
    positional_r2: float | None  # the positional axis: held-out R^2 of the position-only surrogate
    content_js: float | None  # mean JS divergence (bits, 0..1) real vs within-story shuffled tokens
    mean_distance: float  # attention-weighted mean of q - k
    near_mass: float  # attention on offsets 0..near_offsets (default 0-3)
    prev_token: float  # attention on k = q - 1
    entropy: float  # mean row entropy, bits
    entropy_norm: float  # mean row entropy / log2(number of visible keys)
    bos_mass: float  # attention on the first (BOS) token: the sink
    tl_previous_token: float | None  # transformer_lens.head_detector scores (few stories)
    tl_duplicate_token: float | None
    tl_induction: float | None
    top_category: str | None  # first entry of top_categories
    top_category_lift: float | None
    top_category_p: float | None
    top_categories: list[dict[str, Any]] = field(default_factory=list)  # {category, mass, expected, excess, lift, p}
    top_tokens: list[dict[str, Any]] = field(default_factory=list)  # {token, id, count, mass, expected, excess, lift}
    categories: dict[str, dict[str, float | None]] = field(default_factory=dict)  # every category: mass/expected/lift/p
    offset_profile: list[float] = field(default_factory=list)  # mean attention at offset 0, 1, 2, ...
    profile_r2: float | None = None  # R^2 of rows predicted by the renormalised offset profile (the pattern rule's)
    axes: dict[str, Any] = field(default_factory=dict)  # evidence per axis against its null: positional, content, sink
    pattern_label: str | None = None  # the older pattern-only rule (PATTERN_LABELS; first match wins): not the label to cite
    pattern_reason: str | None = None  # the pattern rule that fired, with its numbers

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HeadRecord":
        names = {f.name for f in fields(cls)}
        missing = {"layer", "head", "label"} - set(d)
        if missing:
            raise DataError(f"head record lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class HeadResults:
    """Every head's :class:`HeadRecord`, plus the config used and a corpus summary."""

    records: list[HeadRecord]
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    # from the streaming pass, in memory only (not saved with the records): the output effects'
    # per-story sums (HeadEffects) and every head's axis row (tinyinterp.analysis.heads.axes.label_heads)
    effects: Any = field(default=None, repr=False, compare=False)
    axes: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> HeadRecord:
        for r in self.records:
            if (r.layer, r.head) == tuple(key):
                return r
        raise KeyError(f"no head {key}")

    @property
    def shape(self) -> tuple[int, int]:
        return (max(r.layer for r in self.records) + 1, max(r.head for r in self.records) + 1)

    def labels(self) -> np.ndarray:
        """object array [n_layers, n_heads] of labels."""
        out = np.empty(self.shape, dtype=object)
        for r in self.records:
            out[r.layer, r.head] = r.label
        return out

    def score(self, name: str) -> np.ndarray:
        """float array [n_layers, n_heads] of one scalar score (NaN where undefined)."""
        out = np.full(self.shape, np.nan)
        for r in self.records:
            v = getattr(r, name)
            out[r.layer, r.head] = np.nan if v is None else v
        return out

    @property
    def profiles(self) -> np.ndarray:
        """float array [n_layers, n_heads, n_offsets]: mean attention by offset (for plots)."""
        n = max(len(r.offset_profile) for r in self.records)
        out = np.zeros((*self.shape, n))
        for r in self.records:
            out[r.layer, r.head, : len(r.offset_profile)] = r.offset_profile
        return out

    def to_frame(self):
        """pandas DataFrame, one row per head: scalar scores, evidence summaries, per-category columns."""
        import pandas as pd

        rows = []
        for r in self.records:
            row: dict[str, Any] = {"layer": r.layer, "head": r.head, "label": r.label, "pattern_label": r.pattern_label}
            row.update({k: getattr(r, k) for k in SCALAR_SCORES})
            row.update(top_category=r.top_category, top_category_lift=r.top_category_lift, top_category_p=r.top_category_p)
            row["top_categories"] = "; ".join(f"{c['category']} x{_fmt(c['lift'])}" for c in r.top_categories)
            row["top_tokens"] = "; ".join(f"{t['token']!r} x{_fmt(t['lift'])}" for t in r.top_tokens)
            row["reason"] = r.reason
            for cat, v in r.categories.items():
                row[f"lift_{cat}"] = v.get("lift")
                row[f"p_{cat}"] = v.get("p")
                row[f"mass_{cat}"] = v.get("mass")
            rows.append(row)
        return pd.DataFrame(rows)

    def to_json(self) -> str:
        """The whole result as a JSON string (``{"heads": [...], "config": ..., "meta": ...}``)."""
        return json.dumps({"heads": [r.to_dict() for r in self.records], "config": jsonable(self.config),
                           "meta": jsonable(self.meta)})

    @classmethod
    def from_json(cls, data: str | dict | list) -> "HeadResults":
        """Inverse of :meth:`to_json`; also accepts the list written to ``heads.json``."""
        obj = json.loads(data) if isinstance(data, str) else data
        if isinstance(obj, list):
            obj = {"heads": obj}
        if not isinstance(obj, dict) or not isinstance(obj.get("heads"), list):
            raise DataError("head results JSON must be a list of head objects or {'heads': [...]}")
        return cls([HeadRecord.from_dict(h) for h in obj["heads"]], obj.get("config") or {}, obj.get("meta") or {})

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``heads.json``, ``heads.csv`` and ``heads_meta.json`` (each atomically) into ``out_dir``; returns it."""
        from tinyinterp.atomic import atomic_path

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_result_json(out / HEADS_JSON, [r.to_dict() for r in self.records])
        write_result_json(out / HEADS_META_JSON, {"config": self.config, "meta": self.meta})
        with atomic_path(out / "heads.csv") as tmp:
            self.to_frame().to_csv(tmp, index=False)
        return out

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "HeadResults":
        """Read a folder written by :meth:`save` (``heads_meta.json`` is optional)."""
        res = read_result(Path(out_dir) / HEADS_JSON, "HeadResults.save(folder)", cls.from_json)
        extra = read_result_json(Path(out_dir) / HEADS_META_JSON, "HeadResults.save(folder)", default={})
        res.config, res.meta = extra.get("config") or {}, extra.get("meta") or {}
        return res


def label_counts(labels) -> dict[str, int]:
    """Heads per label: the four single labels always (zeros included), combined labels (``local+semantic``...)
    only when some head has them, in the order of :data:`LABELS`."""
    labels = list(labels)
    keep = [lab for lab in (*LABELS, *sorted(set(labels) - set(LABELS))) if lab in PATTERN_LABELS or lab in labels]
    return {lab: labels.count(lab) for lab in keep}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
