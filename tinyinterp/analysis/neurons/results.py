"""Results of the neuron analysis: one row per tested neuron × tag with its category, a summary, examples, the control.

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

import numpy as np
import pandas as pd

from tinyinterp.analysis.results_io import jsonable, parse_result, read_result_json, write_result_json
from tinyinterp.atomic import write_text

NEURONS_JSON, NEURONS_CSV, SUMMARY_JSON, EXAMPLES_JSON = (
    "neurons.json", "neurons.csv", "neurons_summary.json", "neuron_examples.json")



@dataclass
class NeuronResults:
    """One row per tested neuron × tag (columns: :mod:`~tinyinterp.analysis.neurons.decision`), a summary
    (counts per category per tag, paper-form specificity, lexical baselines), examples, the untrained control."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "layer.neuron" -> examples
    control: "NeuronResults | None" = None  # the untrained model's results
    selection: Any = None  # SelectionStats of a fresh analysis (what the ablation ranks and matches on); not saved
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step of a fresh analysis; not saved
    activations: Any = None  # the kept UnitActivations, when the job was asked to hand them on (features); not saved

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def category(self, category: str | None = "pos", tag: str | None = None) -> pd.DataFrame:
        """Rows of one ``category`` (``pos``, ``token``, ``untestable``; None: not replicated), optionally
        of one tag, best held-out AUROC first."""
        df = self.to_frame()
        if df.empty:
            return df
        want = df["category"].isna() if category is None else df["category"] == category
        df = df[want & ((df["tag"] == tag) if tag else True)]
        return df.sort_values("auroc", ascending=False)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{tag: {"pos": n, "token": n, "untestable": n, "none": n}}``."""
        return self.summary["categories_per_tag"]

    def top_neurons(self, tag: str, n: int = 5, category: str | None = None) -> list[tuple[int, int]]:
        """(layer, neuron) of the ``n`` rows for ``tag`` (of one ``category``, if given) with the highest held-out AUROC."""
        df = self.to_frame()
        if df.empty:
            return []
        df = df[(df["tag"] == tag) & ((df["category"] == category) if category else True)].dropna(subset=["auroc"])
        df = df.sort_values("auroc", ascending=False).head(n)
        return [(int(r.layer), int(r.neuron)) for r in df.itertuples()]

    def tag_table(self) -> pd.DataFrame:
        """Per tag: rows per category, the untrained control's ``pos`` rows, the paper-form result and the lexical
        baselines (lookup AUROC held out; lookup and embedding AUROC on unseen token ids)."""
        s = self.summary
        ctrl = (s.get("untrained_control") or {}).get("pos_per_tag", {})
        paper = (s.get("paper_specificity") or {}).get("per_tag", {})
        lex = s.get("lexical_baseline") or {}
        out = []
        for tag, c in s.get("categories_per_tag", {}).items():
            p, lx = paper.get(tag, {}), lex.get(tag, {})
            out.append({"tag": tag, **{k: c[k] for k in ("pos", "token", "untestable", "none")},
                        "untrained pos": ctrl.get(tag), "best AUROC": s.get("best_auroc_by_tag", {}).get(tag),
                        "paper-form neurons": p.get("n_units"), "paper-form beyond identity": p.get("n_beyond_identity"),
                        "lookup AUROC": lx.get("lookup", {}).get("auroc"),
                        "lookup AUROC unseen ids": lx.get("lookup", {}).get("unseen_auroc"),
                        "embedding AUROC unseen ids": lx.get("embedding", {}).get("unseen_auroc")})
        return pd.DataFrame(out)

    def display_frame(self) -> pd.DataFrame:
        """The rows for reading: category and reasons, sensitivity and specificity side by side, the
        identity evidence with CIs, and the tag's lexical baseline."""
        def ci(v) -> str:
            return "" if not isinstance(v, list) or not all(np.isfinite(v)) else f"[{v[0]:.2f}, {v[1]:.2f}]"

        out = []
        for r in self.rows:
            out.append({"neuron": f"L{r['layer']}N{r['neuron']}", "layer": r["layer"], "neuron_index": r["neuron"], "tag": r["tag"],
                        "category": r["category"] or "none", "reasons": "; ".join(r.get("reasons", [])),
                        "AUROC": r["auroc"], "AUROC CI": ci(r.get("auroc_ci")), "q": r.get("q_value"),
                        "top-k precision": r.get("top_k_precision"), "AP lift": r.get("ap_lift"),
                        "word types in top-k": r.get("n_top_types"), "AUROC unseen ids": r.get("unseen_auroc"),
                        "ambiguous AUROC": r.get("ambiguous_auroc"), "ambiguous CI": ci(r.get("ambiguous_ci")),
                        "ambiguous n": f"{r.get('ambiguous_n_pos', '')}/{r.get('ambiguous_n_neg', '')}",
                        "lookup AUROC": r.get("lookup_auroc"), "lookup AUROC unseen": r.get("lookup_unseen_auroc")})
        return pd.DataFrame(out)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "summary": self.summary, "examples": self.examples,
                "control": None if self.control is None else self.control.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NeuronResults":
        if d["rows"] and "category" not in d["rows"][0]:
            raise ValueError("its rows have no 'category' (written by a tinyinterp before the identity categories)")
        control = None if d.get("control") is None else cls.from_dict(d["control"])
        rows = [{k: _nan(k, v) for k, v in r.items()} for r in d["rows"]]
        return cls(rows=rows, summary=d["summary"], examples=d.get("examples", {}), control=control)

    def to_json(self) -> str:
        """Strict JSON (NaN written as null) of everything, control included."""
        return json.dumps(jsonable(self.to_dict()))

    @classmethod
    def from_json(cls, text: str) -> "NeuronResults":
        return cls.from_dict(json.loads(text))

    def save(self, out: str | os.PathLike) -> Path:
        """Write neurons.json (list of rows), neurons.csv, neurons_summary.json, neuron_examples.json; returns ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_result_json(out / NEURONS_JSON, self.rows)
        write_text(out / NEURONS_CSV, self.to_frame().to_csv(index=False))
        summary = dict(self.summary)
        if self.control is not None:
            summary["control"] = self.control.to_dict()
        write_result_json(out / SUMMARY_JSON, summary)
        write_result_json(out / EXAMPLES_JSON, self.examples)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NeuronResults":
        """Read a folder written by :meth:`save` (``neuron_examples.json`` is optional)."""
        path, writer = Path(path), "NeuronResults.save(folder)"
        rows = read_result_json(path / NEURONS_JSON, writer)
        summary = parse_result(read_result_json(path / SUMMARY_JSON, writer), dict, path / SUMMARY_JSON, writer)
        examples = read_result_json(path / EXAMPLES_JSON, writer, default={})
        control = summary.pop("control", None)
        return parse_result({"rows": rows, "summary": summary, "examples": examples, "control": control}, cls.from_dict,
                            path, writer)


def _nan(key: str, v: Any) -> Any:
    """JSON null back to NaN in numeric columns and inside lists of numbers (CIs)."""
    if isinstance(v, list):
        return [math.nan if x is None else x for x in v]
    return math.nan if v is None and key in _FLOAT_COLS else v


_FLOAT_COLS = {"auroc", "auroc_select", "auroc_err", "p_value", "q_value", "ap", "base_rate", "ap_lift", "top_k_precision",
               "unseen_auroc", "ambiguous_auroc", "ambiguous_p", "ambiguous_q", "cohens_d", "mean_pos", "mean_neg",
               *(f"{b}_{k}" for b in ("lookup", "embedding") for k in ("auroc", "ap_lift", "ambiguous_auroc", "unseen_auroc"))}
