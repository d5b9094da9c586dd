"""Results of the feature analysis: candidate feature x tag rows, and per SAE a summary.

``FeatureResults.save(folder)`` writes ``features.json`` (the rows of every SAE, each with its
``sae``), ``features.csv`` and ``features_summary.json`` (``{"saes": [...]}``: per SAE its hook,
categories per tag, lexical baseline, the best-neuron-vs-best-feature ``comparison`` per tag and
the feature ``ablation`` table); ``FeatureResults.load(folder)`` reads them back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tinyinterp.analysis.results_io import parse_result, read_result_json, write_result_json
from tinyinterp.atomic import write_text

FEATURES_JSON, FEATURES_CSV, FEATURES_SUMMARY_JSON = "features.json", "features.csv", "features_summary.json"
WRITER = "FeatureResults.save(folder) or `tinyinterp analyze --features`"


@dataclass
class FeatureResults:
    """Candidate feature x tag rows (identity categories, held-out metrics) and one summary per SAE."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=lambda: {"saes": []})

    @property
    def saes(self) -> list[dict[str, Any]]:
        return self.summary.get("saes", [])

    def to_frame(self) -> pd.DataFrame:
        cols = [c for c in (self.rows[0] if self.rows else {}) if not c.startswith("auroc_select")]
        df = pd.DataFrame(self.rows)
        return df[[c for c in cols if c in df]] if not df.empty else df

    def comparison(self, sae: str | None = None) -> pd.DataFrame:
        """The per-tag table best neuron vs best feature (of ``sae``, default the first SAE)."""
        entries = [s for s in self.saes if sae is None or s["name"] == sae]
        return pd.DataFrame(entries[0]["comparison"] if entries else [])

    @classmethod
    def combine(cls, parts: list["FeatureResults"]) -> "FeatureResults":
        return cls([r for p in parts for r in p.rows], {"saes": [s for p in parts for s in p.saes]})

    def save(self, out: str | os.PathLike) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_result_json(out / FEATURES_JSON, self.rows)
        flat = self.to_frame()
        for c in ("reasons", "selected_folds", "auroc_ci", "unseen_ci"):
            if c in flat:
                flat[c] = flat[c].map(lambda v: "; ".join(map(str, v)) if isinstance(v, list) else v)
        write_text(out / FEATURES_CSV, flat.to_csv(index=False))
        write_result_json(out / FEATURES_SUMMARY_JSON, self.summary)
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "FeatureResults":
        folder = Path(folder)
        rows = read_result_json(folder / FEATURES_JSON, WRITER)
        summary = read_result_json(folder / FEATURES_SUMMARY_JSON, WRITER)
        return parse_result({"rows": rows, "summary": summary},
                            lambda d: cls(list(d["rows"]), dict(d["summary"], saes=list(d["summary"]["saes"]))),
                            folder, WRITER)

    @classmethod
    def exists(cls, folder: str | os.PathLike) -> bool:
        return (Path(folder) / FEATURES_JSON).is_file()
