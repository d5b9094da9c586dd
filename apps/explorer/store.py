"""Analysis results for the explorer: precomputed ones, or computed on demand and cached on disk.

No Streamlit here: progress is reported through a callback ``progress(message, fraction)``
(``fraction`` in [0, 1] or None), which the pages turn into ``st.status``/``st.progress``.

* ``CKPT/analysis/`` (written by ``tinyinterp analyze``) is used when it holds ``heads.json``.
* Otherwise :func:`compute_analysis` writes the analysis of a small corpus of stories *the
  model generates itself* into ``cache_dir("explorer")/<name>-<content hash>/analysis-vN/``
  (written into a temporary folder, then renamed, so a half-finished analysis is never read).
* Snapshots (``CKPT/snapshots/step_N``) get a lighter analysis (heads and neurons, no
  controls, ablations or probes) on the same corpus, one folder per step, on demand.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from apps.explorer.catalog import content_key
from apps.explorer.live import tag_stories

log = logging.getLogger(__name__)

VERSION = 1  # bump when the on-demand analysis settings below change
N_STORIES = 40  # stories the model writes for an on-demand analysis
STORY_TOKENS = 120  # new tokens per generated story
PROMPTS = ("Once upon a time", "One day,", "Lily and Tom", "There was a little", "The sun was")
Progress = Callable[[str, "float | None"], None]


def _quiet(_msg: str, _frac: float | None = None) -> None:
    return None


@dataclass
class Results:
    """Everything the pages read about one checkpoint's analysis."""

    dir: Path
    precomputed: bool  # True: CKPT/analysis; False: computed by the explorer into its cache
    heads: Any = None  # HeadResults
    neurons: Any = None  # NeuronResults
    probes: Any = None  # ProbeResults
    ablation: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def cache_root(ckpt: Path) -> Path:
    import tinyinterp

    d = tinyinterp.cache_dir("explorer") / f"{ckpt.name}-{content_key(ckpt)}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def precomputed_dir(ckpt: Path) -> Path | None:
    d = ckpt / "analysis"
    return d if (d / "heads.json").is_file() else None


def computed_dir(ckpt: Path) -> Path:
    return cache_root(ckpt) / f"analysis-v{VERSION}"


def find_analysis(ckpt: Path) -> tuple[Path, bool] | None:
    """(folder, precomputed) of the results to show, or None when they must be computed."""
    pre = precomputed_dir(ckpt)
    if pre is not None:
        return pre, True
    done = computed_dir(ckpt)
    return (done, False) if (done / "summary.json").is_file() else None


def load_results(folder: Path, precomputed: bool) -> Results:
    """Read every result file that exists in ``folder`` (missing parts stay None / empty).

    Refuses (one line) a folder whose files are not one analysis: a run killed while moving its results
    in, or files changed since ``complete.json`` listed them; folders older than the marker are read."""
    from tinyinterp import HeadResults, NeuronResults, ProbeResults, check_complete

    check_complete(folder, legacy_ok=True)
    res = Results(folder, precomputed)
    if (folder / "heads.json").is_file():
        res.heads = HeadResults.load(folder)
    if (folder / "neurons.json").is_file():
        res.neurons = NeuronResults.load(folder)
    if (folder / "probes.json").is_file():
        res.probes = ProbeResults.load(folder)
    for name, attr in (("ablation.json", "ablation"), ("summary.json", "summary")):
        f = folder / name
        if f.is_file():
            setattr(res, attr, json.loads(f.read_text(encoding="utf-8")))
    return res


# --- the corpus ---------------------------------------------------------------------------------

def corpus_file(ckpt: Path) -> Path | None:
    """The stories behind the analysis: ``analysis/corpus.txt``, or the explorer's generated ones."""
    for f in (ckpt / "analysis" / "corpus.txt", cache_root(ckpt) / "corpus.txt"):
        if f.is_file() and f.stat().st_size:
            return f
    return None


def clean_story(text: str) -> str:
    """A generated story as corpus text: no control characters (an undertrained model writes NUL
    bytes, which story readers reject as binary) and no separator lines."""
    text = "".join(ch for ch in text if ch >= " " or ch in "\n\t").replace("<|endoftext|>", " ")
    return text.strip()


def generate_stories(ckpt: Path, n: int = N_STORIES, max_new_tokens: int = STORY_TOKENS,
                     progress: Progress = _quiet) -> list[str]:
    """``n`` stories written by the model itself (temperature 0.8, seeds 0..n-1, varied prompts)."""
    import tinyinterp

    model, tok = tinyinterp.load_fast_model(ckpt)
    stories = []
    for i in range(n):
        progress(f"Writing story {i + 1} of {n} with the model", i / n)
        text = clean_story(tinyinterp.generate_text(model, PROMPTS[i % len(PROMPTS)], max_new_tokens, 0.8, seed=i,
                                                    tokenizer=tok))
        if text:
            stories.append(text)
    progress(f"Wrote {len(stories)} stories", 1.0)
    return stories


def ensure_corpus(ckpt: Path, progress: Progress = _quiet, n: int = N_STORIES) -> list[str]:
    """The analysis corpus as a list of stories (generated and cached on first use when absent)."""
    import tinyinterp

    f = corpus_file(ckpt)
    if f is None:
        stories = generate_stories(ckpt, n, progress=progress)
        f = cache_root(ckpt) / "corpus.txt"
        tinyinterp.write_text(f, "".join(s + "\n<|endoftext|>\n" for s in stories))
    return tinyinterp.load_stories(str(f))


# --- on-demand analysis -------------------------------------------------------------------------

def _analysis_config(light: bool):
    from tinyinterp import AnalysisConfig, HeadConfig, NeuronConfig

    if light:  # snapshots: labels and selectivity only
        return AnalysisConfig(max_stories=None, run_probes=False, report=False, ablation_tags=(),
                              heads=HeadConfig(detector_stories=0, n_permutations=199),
                              neurons=NeuronConfig(untrained_control=False, n_examples=0),
                              head_effects=False)
    # on demand, while the user waits: head ablations on 25 stories, no halves check (the CLI does both)
    return AnalysisConfig(max_stories=None, run_probes=False, report=False, head_ablation_stories=25, head_halves=False)


def _analyze_into(model, corpus, target: Path, light: bool, name: str) -> Path:
    """Run ``analyze`` into a private temporary folder and rename it to ``target`` when complete."""
    import tinyinterp

    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tinyinterp.analyze(model, corpus, tmp, _analysis_config(light), model_name=name, progress=False)
    (tmp / ".lock").unlink(missing_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another session finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def compute_analysis(ckpt: Path, progress: Progress = _quiet) -> Path:
    """Analyse ``ckpt`` on stories it writes itself; returns the (cached) results folder."""
    import tinyinterp

    target = computed_dir(ckpt)
    if (target / "summary.json").is_file():
        return target
    stories = ensure_corpus(ckpt, progress)
    log.info("analysing %s on %d stories it wrote; results go to %s", ckpt, len(stories), target)
    progress(f"Tagging {len(stories)} stories, classifying heads, finding part-of-speech neurons", None)
    model = tinyinterp.load_model(ckpt)
    corpus = tag_stories(model, stories)
    _analyze_into(model, corpus, target, light=False, name=ckpt.name)
    progress("Analysis done", 1.0)
    return target


# --- training snapshots -------------------------------------------------------------------------

def pick_snapshots(snaps: list[tuple[int, Path]], cap: int) -> list[tuple[int, Path]]:
    """At most ``cap`` snapshots, evenly spread over the list, always keeping the first and last."""
    if cap <= 0 or not snaps:
        return []
    if len(snaps) <= cap:
        return list(snaps)
    idx = sorted(set(np.linspace(0, len(snaps) - 1, cap).round().astype(int).tolist()))
    return [snaps[i] for i in idx]


def snapshot_dir(ckpt: Path, step: int) -> Path:
    return cache_root(ckpt) / f"snapshots-v{VERSION}" / f"step_{step:07d}"


def snapshot_done(ckpt: Path, step: int) -> bool:
    return (snapshot_dir(ckpt, step) / "summary.json").is_file()


def analyze_snapshots(ckpt: Path, snaps: list[tuple[int, Path]], progress: Progress = _quiet) -> list[Path]:
    """Analyse each snapshot not yet cached (same corpus for all); returns their result folders."""
    import tinyinterp

    todo = [(s, p) for s, p in snaps if not snapshot_done(ckpt, s)]
    stories = ensure_corpus(ckpt, progress) if todo else []
    corpus = None
    for i, (step, path) in enumerate(todo):
        progress(f"Analysing snapshot at step {step:,} ({i + 1} of {len(todo)})", i / len(todo))
        log.info("analysing snapshot %s", path)
        model = tinyinterp.load_model(path)
        if corpus is None:  # every snapshot shares the final model's tokenizer
            corpus = tag_stories(model, stories)
        target = snapshot_dir(ckpt, step)
        target.parent.mkdir(parents=True, exist_ok=True)
        _analyze_into(model, corpus, target, light=True, name=f"{ckpt.name}@{step}")
    if todo:
        progress("Snapshots analysed", 1.0)
    return [snapshot_dir(ckpt, s) for s, _ in snaps]


def dynamics_tables(steps_dirs: list[tuple[int, Path]]):
    """(heads, neurons) frames over training: one row per step × head, one per step × POS tag."""
    import pandas as pd

    from tinyinterp import HeadResults

    head_rows, pos_rows = [], []
    for step, d in steps_dirs:
        if (d / "heads.json").is_file():
            for r in HeadResults.load(d).records:
                head_rows.append({"step": step, "head": f"L{r.layer}H{r.head}", "layer": r.layer, "label": r.label,
                                  "positional_r2": r.positional_r2, "content_js": r.content_js,
                                  "mean_distance": r.mean_distance, "bos_mass": r.bos_mass})
        f = d / "neurons_summary.json"
        if f.is_file():
            s = json.loads(f.read_text(encoding="utf-8"))
            best = {}
            nf = d / "neurons.json"
            if nf.is_file():
                for row in json.loads(nf.read_text(encoding="utf-8")):
                    a = row.get("auroc")
                    if a is not None:
                        best[row["tag"]] = max(best.get(row["tag"], 0.0), a)
            for tag, n in (s.get("pos_per_tag") or {}).items():
                pos_rows.append({"step": step, "pos": tag, "pos_neurons": int(n), "best_auroc": best.get(tag)})
    return pd.DataFrame(head_rows), pd.DataFrame(pos_rows)


# --- for the Compare page -----------------------------------------------------------------------

def probes_file(ckpt: Path, step: int | None) -> Path:
    """Where the explorer keeps the UPOS probes it fitted for ``ckpt`` (or its snapshot at ``step``)."""
    return cache_root(ckpt) / f"probes-v{VERSION}" / ("final" if step is None else f"step_{step:07d}") / "probes.json"


def compute_probes(ckpt: Path, model_path: Path, step: int | None, progress: Progress = _quiet) -> Path:
    """Fit the UPOS probes (``tinyinterp.probe_layers``) of ``model_path`` on ``ckpt``'s analysis stories."""
    import tinyinterp

    target = probes_file(ckpt, step)
    if target.is_file():
        return target
    stories = ensure_corpus(ckpt, progress)
    progress(f"Tagging {len(stories)} stories and fitting a probe at every layer", None)
    model = tinyinterp.load_model(model_path)
    probes = tinyinterp.probe_layers(model, tag_stories(model, stories))
    probes.save(target.parent)
    progress("Probes fitted", 1.0)
    return target


def shared_stories(ckpts: list[Path], progress: Progress = _quiet) -> Path:
    """One file with the analysis stories of every checkpoint in ``ckpts`` (cached by content), so that
    models are evaluated on the same text."""
    import hashlib

    import tinyinterp

    stories = [s for c in dict.fromkeys(ckpts) for s in ensure_corpus(c, progress)]
    text = "".join(s + "\n<|endoftext|>\n" for s in stories)
    f = cache_root(ckpts[0]).parent / "shared" / f"stories-{hashlib.sha256(text.encode()).hexdigest()[:16]}.txt"
    if not f.is_file():
        f.parent.mkdir(parents=True, exist_ok=True)
        tinyinterp.write_text(f, text)
    return f
