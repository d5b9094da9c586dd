"""Results of the neuron analysis: one row per reported neuron × tag, a summary, examples, the control.

``NeuronResults.save(folder)`` writes ``neurons.json`` (the rows), ``neurons.csv``,
``neurons_summary.json`` (the summary, with the untrained control's whole result under
``control``) and ``neuron_examples.json``; ``NeuronResults.load(folder)`` reads them back.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tinyinterp.analysis.results_io import jsonable
from tinyinterp.atomic import write_json, write_text
from tinyinterp.errors import DataError

NEURONS_JSON, NEURONS_CSV, SUMMARY_JSON, EXAMPLES_JSON = (
    "neurons.json", "neurons.csv", "neurons_summary.json", "neuron_examples.json")



@dataclass
class NeuronResults:
    """One row per reported neuron × tag (see :meth:`to_frame`), a summary, examples, control."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "layer.neuron" -> examples
    control: "NeuronResults | None" = None  # the untrained model's results

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def selective(self, tag: str | None = None) -> pd.DataFrame:
        """Selective rows (optionally of one tag), best held-out AUROC first."""
        df = self.to_frame()
        if df.empty:
            return df
        df = df[df["selective"] & ((df["pos"] == tag) if tag else True)]
        return df.sort_values("auroc", ascending=False)

    def top_neurons(self, tag: str, n: int = 5, selective_only: bool = False) -> list[tuple[int, int]]:
        """(layer, neuron) of the ``n`` rows for ``tag`` with the highest held-out AUROC."""
        df = self.to_frame()
        df = df[(df["pos"] == tag) & (df["selective"] if selective_only else True)].dropna(subset=["auroc"])
        df = df.sort_values("auroc", ascending=False).head(n)
        return [(int(r.layer), int(r.neuron)) for r in df.itertuples()]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "summary": self.summary, "examples": self.examples,
                "control": None if self.control is None else self.control.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NeuronResults":
        control = None if d.get("control") is None else cls.from_dict(d["control"])
        rows = [{k: (math.nan if v is None and k in _FLOAT_COLS else v) for k, v in r.items()} for r in d["rows"]]
        return cls(rows=rows, summary=d["summary"], examples=d.get("examples", {}), control=control)

    def to_json(self) -> str:
        """Strict JSON (NaN written as null) of everything, control included."""
        return json.dumps(jsonable(self.to_dict()))

    @classmethod
    def from_json(cls, text: str) -> "NeuronResults":
        return cls.from_dict(json.loads(text))

    def save(self, out: str | os.PathLike) -> Path:
        """Write neurons.json (list of rows), neurons.csv, neurons_summary.json, neuron_examples.json."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / NEURONS_JSON, jsonable(self.rows))
        write_text(out / NEURONS_CSV, self.to_frame().to_csv(index=False))
        summary = dict(self.summary)
        if self.control is not None:
            summary["control"] = jsonable(self.control.to_dict())
        write_json(out / SUMMARY_JSON, jsonable(summary))
        write_json(out / EXAMPLES_JSON, jsonable(self.examples))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NeuronResults":
        path = Path(path)
        try:
            rows = json.loads((path / NEURONS_JSON).read_text())
            summary = json.loads((path / SUMMARY_JSON).read_text())
            ex_path = path / EXAMPLES_JSON
            examples = json.loads(ex_path.read_text()) if ex_path.exists() else {}
        except FileNotFoundError as exc:
            raise DataError(f"{exc.filename}: missing; pass a folder written by NeuronResults.save") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: unreadable neuron results ({exc}); re-run the analysis") from None
        control = summary.pop("control", None)
        return cls.from_dict({"rows": rows, "summary": summary, "examples": examples, "control": control})


_FLOAT_COLS = {"auroc", "auroc_select", "auroc_err", "ap", "cohens_d", "mean_diff", "mean_pos", "mean_neg",
               "p_value", "q_value", "top_k_precision", "ambiguous_auroc", "top_k_word_share"}
