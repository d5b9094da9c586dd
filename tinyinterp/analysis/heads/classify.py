"""Classify attention heads as local, semantic, sink or mixed, with scores and evidence.

>>> heads = classify_heads(model, corpus)          # doctest: +SKIP
>>> heads.to_frame()[["layer", "head", "label", "positional_r2", "content_js"]]  # doctest: +SKIP

Scores, per head (query row 0, the BOS query, is excluded everywhere):

* **positional_r2** — the label's positional axis: held-out R² of the position-only surrogate
  (each row predicted by the head's mean pattern at the same (query, key) positions over the other
  stories; :meth:`~tinyinterp.analysis.heads.effects_pass.EffectsPass.position_r2`).
* **profile_r2** — the older positional score: R² of predicting each attention row from the
  head's mean attention-by-offset profile ``m[d]`` (``d = q - k``), renormalised over the visible
  keys ``k <= q``, against the uniform row. The profile is estimated on ``calibration_stories``
  stories, the R² on all of them.
* **locality** — ``mean_distance`` (attention-weighted ``q - k``), ``near_mass`` (offsets
  0..``near_offsets``), ``prev_token`` (offset 1), ``entropy`` (bits) and ``entropy_norm``
  (÷ log2 of the number of visible keys), ``bos_mass`` (attention on the first token: the sink).
* **content_js** — mean Jensen–Shannon divergence (bits, 0..1) between a row on the real
  story and the same row with the story's tokens shuffled (BOS kept, fixed seed), on the
  calibration stories. Purely positional heads score 0.
* **semantic lift** — for each category (:data:`CATEGORIES`: UPOS classes of the key's word,
  ``NAME`` = PROPN or PERSON, ``SAME_TOKEN`` = the key has the query's token id,
  ``INDUCTION`` = the key follows an earlier occurrence of the query's token), observed
  attention mass ÷ the mass the positional profile predicts for the same keys. Its p-value
  is a one-sided paired randomisation test across stories: the per-story differences
  (observed − predicted) get random signs ``n_permutations`` times (accumulated online);
  ``p = (1 + #{null sum >= observed sum}) / (1 + n_permutations)``.
* **tl_*** — ``transformer_lens.head_detector.detect_head`` scores (previous-token,
  duplicate-token, induction; ``"mul"`` measure) averaged over ``detector_stories`` stories.
  ``detect_head`` is handed a fresh copy of the cache each time (its ``exclude_*`` options
  write zeros into the cache they are given in some versions).

**The label** (``label``) comes from two axes, each against thresholds derived from null heads
(:mod:`tinyinterp.analysis.heads.axes`; thresholds and where each came from in :class:`HeadConfig`):
``local`` (positional axis passes, or TransformerLens' previous-token score >= 0.4), ``semantic``
(content JS and a category lift pass, Benjamini–Hochberg over every head x category), ``sink``
(``bos_mass`` >= 0.5), joined with ``+`` when several pass (``local+semantic``), ``mixed`` when
none does. No rule order. The evidence is in ``axes``; the output effects
(:mod:`~tinyinterp.analysis.heads.effects`) come from the same streaming pass.

``pattern_label`` keeps the older pattern-only rule (first match wins; not the label to cite):
``sink`` (``bos_mass >= sink_min_bos``); ``local`` (``profile_r2 >= local_min_r2`` and
``content_js <= local_max_js``); ``semantic`` (``content_js >= semantic_min_js`` and a category
with ``lift >= semantic_min_lift``, excess ``>= semantic_min_excess`` and uncorrected ``p <= alpha``);
``mixed`` otherwise.

"Local" here means a head that attends by distance. GPT-Neo's architectural "local
attention" (layers whose keys are masked outside a fixed window, ``attn_types`` in the
config) is a different thing: a head in a windowed layer may be semantic within its
window, and a global-attention head may be local. Windowed layers are reported in
``meta["attn_types"]``; their masked keys simply receive zero attention here.

Memory: each layer's pattern is reduced to fixed-size per-head sums inside a forward hook
(``run_with_hooks`` on ``hook_pattern`` only; the forward stops after the last layer's
pattern), so memory does not grow with the corpus (see :mod:`tinyinterp.analysis.heads.scores`).
:class:`HeadJob` splits the function into calibration, a streaming pass and the final
scoring, so :func:`tinyinterp.analysis.pipeline.heads_and_neurons` can share the pass with
the neuron analysis.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from tinyinterp.analysis.corpus.store import StoryStore, TaggedCorpus
from tinyinterp.analysis.corpus.tagging import tokenizer_fingerprint
from tinyinterp.analysis.engine import eval_mode, run_pass
from tinyinterp.analysis.heads.axes import label_heads
from tinyinterp.analysis.heads.calibration import calibrate
from tinyinterp.analysis.heads.detectors import detector_scores
from tinyinterp.analysis.heads.effects import collect_effects
from tinyinterp.analysis.heads.effects_pass import EffectsPass
from tinyinterp.analysis.heads.results import PATTERN_LABELS, HeadRecord, HeadResults, label_counts
from tinyinterp.analysis.heads.scores import CATEGORIES, KEY_CATEGORIES, MainPass
from tinyinterp.analysis.results_io import jsonable
from tinyinterp.errors import ConfigError, DataError

log = logging.getLogger(__name__)



@dataclass
class HeadConfig:
    """Settings of :func:`classify_heads`; every threshold of the label rule is here, each with where it came from.

    The label thresholds were fixed before the bundled models were labelled: derived by
    ``python -m tinyinterp.analysis.heads.nulls`` from null heads only (untrained models of the
    ts-1l/ts-4l shapes x 3 seeds and planted surrogates) on the evaluation stories; the output is
    ``docs/head_thresholds.json``, the method ``docs/analysis.md``. The rule:
    :mod:`tinyinterp.analysis.heads.axes`.
    """

    # --- the label (two axes against their nulls; tinyinterp.analysis.heads.axes) ---
    # 99th pct (0.5189, rounded up) of the held-out position-only R^2 over 128 null heads with no positional
    # component: untrained ts-1l/ts-4l shapes x 3 seeds (120) + content-only surrogates (8); docs/head_thresholds.json
    positional_min_r2: float = 0.519
    # TransformerLens previous-token score that makes a head positional on its own: the criterion, not tuned
    # (the positional nulls' 99th pct is 0.034, docs/head_thresholds.json)
    previous_token_min: float = 0.4
    # 99th pct (0.1046, rounded up) of content JS over 130 null heads with no content component:
    # the same untrained heads (120) + position-only surrogates (10); docs/head_thresholds.json
    content_min_js: float = 0.105
    # 99th pct (1.6922, rounded up) of the largest category lift over those 130 content-null heads
    min_lift: float = 1.693
    # Benjamini-Hochberg level across every head x category lift test of a model: the conventional 5%, not tuned
    fdr: float = 0.05
    # what the lift test tests: "min_lift" = lift > min_lift (evidence beyond the null heads' 99th pct); "one" = lift > 1
    # with the point estimate >= min_lift (the first reading). Changed to "min_lift" after looking at ts-1l, whose head 0
    # flipped between corpus halves on an INTJ lift of 1.66 [1.58, 1.74]: docs/analysis.md shows both readings
    lift_test: str = "min_lift"
    # sink: mean attention on the first token at least this; a majority by definition, not tuned (also the pattern rule's)
    sink_min_bos: float = 0.5
    # --- output effects (in the shared pass; tinyinterp.analysis.heads.effects) ---
    output_effects: bool = True  # direct logit attribution by next-token group, attention conditioned on the next token
    n_boot: int = 2000  # story-bootstrap resamples for every CI and Wald p-value of the axes and effects
    copying_min_count: int = 5  # a token id enters the OV copying score when it occurs this often in the corpus
    # --- the older pattern-only rule, kept as the secondary field pattern_label (first match wins) ---
    local_min_r2: float = 0.5  # pattern local: offset-profile R^2 (profile_r2) at least this ...
    local_max_js: float = 0.25  # ... and content JS at most this (raised from 0.15 after looking at ts-1l: docs/analysis.md)
    semantic_min_js: float = 0.05  # pattern semantic: content JS at least this ...
    semantic_min_lift: float = 1.5  # ... and a category attended this many times more than the profile predicts ...
    semantic_min_excess: float = 0.05  # ... whose excess mass (observed - predicted, per query row) is at least this ...
    alpha: float = 0.01  # ... and whose randomisation-test p-value is at most this (uncorrected; see docs/analysis.md)
    # --- evidence ---
    rank_categories_by: str = "excess"  # order of top_categories: "excess" (mass beyond prediction) or "lift"
    min_category_expected: float = 0.002  # categories predicted below this mass per row are not ranked (tiny support)
    top_k: int = 5  # how many categories / tokens to list as evidence
    min_token_count: int = 5  # a token needs this many key occurrences to be listed
    near_offsets: int = 3  # near_mass counts offsets 0..near_offsets
    # --- sampling and compute ---
    calibration_stories: int | None = 512  # stories for the offset profile and the shuffle control (None: all)
    detector_stories: int = 16  # stories for the TransformerLens head-detector scores (0: skip)
    detector_exclude_bos: bool = False  # passed to detect_head
    detector_exclude_current_token: bool = False  # passed to detect_head
    n_permutations: int = 999  # random sign flips for the lift p-values (min p = 1 / (n + 1))
    batch_tokens: int = 4096  # padded tokens per forward pass (memory ~ batch_tokens * n_ctx * n_heads floats)
    seed: int = 0  # calibration subset, token shuffles and sign flips
    progress: bool = True  # tqdm bars

    def __post_init__(self) -> None:
        unit = ("sink_min_bos", "local_min_r2", "local_max_js", "semantic_min_js", "semantic_min_excess",
                "min_category_expected", "positional_min_r2", "previous_token_min", "content_min_js")
        for name in unit:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"HeadConfig.{name}={v!r}: must be a number in [0, 1]")
        if not 0.0 < self.fdr < 1.0:
            raise ConfigError(f"HeadConfig.fdr={self.fdr!r}: must be in (0, 1)")
        if not isinstance(self.min_lift, (int, float)) or self.min_lift < 1.0:
            raise ConfigError(f"HeadConfig.min_lift={self.min_lift!r}: must be >= 1 (1 = no preference)")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"HeadConfig.alpha={self.alpha!r}: must be in (0, 1)")
        if self.semantic_min_lift < 1.0:
            raise ConfigError(f"HeadConfig.semantic_min_lift={self.semantic_min_lift!r}: must be >= 1 (1 = no preference)")
        if self.lift_test not in ("min_lift", "one"):
            raise ConfigError(f"HeadConfig.lift_test={self.lift_test!r}: use 'min_lift' or 'one'")
        if self.rank_categories_by not in ("excess", "lift"):
            raise ConfigError(f"HeadConfig.rank_categories_by={self.rank_categories_by!r}: use 'excess' or 'lift'")
        positive = {"top_k": 1, "min_token_count": 1, "near_offsets": 0, "n_permutations": 1, "batch_tokens": 1,
                    "detector_stories": 0, "n_boot": 1, "copying_min_count": 1}
        for name, lo in positive.items():
            v = getattr(self, name)
            if not isinstance(v, int) or v < lo:
                raise ConfigError(f"HeadConfig.{name}={v!r}: must be an integer >= {lo}")
        if self.calibration_stories is not None and (not isinstance(self.calibration_stories, int) or self.calibration_stories < 1):
            raise ConfigError(f"HeadConfig.calibration_stories={self.calibration_stories!r}: must be >= 1 or None (all)")
        if 1.0 / (self.n_permutations + 1) > self.alpha:
            raise ConfigError(f"HeadConfig.n_permutations={self.n_permutations}: too few to reach p <= alpha={self.alpha}; "
                              f"use at least {int(np.ceil(1 / self.alpha))}")


def _check_corpus(model, corpus: TaggedCorpus) -> tuple[StoryStore, np.ndarray, np.ndarray]:
    """The packed stories, the indices of those to analyse (a token after BOS) and every story's length cut to ``n_ctx``."""
    if not isinstance(corpus, TaggedCorpus):
        raise DataError(f"corpus is a {type(corpus).__name__}; build one with tinyinterp.load_corpus(paths, model) or tinyinterp.corpus_from_texts(texts, model)")
    n_ctx, d_vocab = model.cfg.n_ctx, model.cfg.d_vocab
    tok = getattr(model, "tokenizer", None)
    want = corpus.meta.get("tokenizer_sha256")
    if tok is not None and want:
        if tokenizer_fingerprint(tok) != want:
            raise DataError("the corpus was tokenised with a different tokenizer than the model's; rebuild it with load_corpus(files, model)")
    store = corpus.packed()
    full = store.lengths if corpus.share is None else corpus.share.lengths  # a rank's share: every story's length
    cut = int((full > n_ctx).sum())
    if cut:
        log.warning("cut %d stories to the model's n_ctx=%d tokens", cut, n_ctx)
    keep = np.nonzero(full >= 2)[0]
    if not len(keep):
        raise DataError("the corpus is empty: no story has a token after BOS")
    top = int(store.flat("tokens").max())  # cheap bound first (no copy for a whole store)
    if top >= d_vocab:  # then exactly, over the tokens the model will see
        top = int(store.flat("tokens", keep, n_ctx).max())
    if top >= d_vocab:
        raise DataError(f"corpus has token id {top} but the model has d_vocab={d_vocab}; tag it with the model's tokenizer")
    return store, keep, np.minimum(full, n_ctx)


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def _decode(tokenizer, i: int) -> str:
    if tokenizer is None:
        return str(i)
    try:
        return tokenizer.decode([i])
    except Exception:  # noqa: BLE001
        return str(i)


def pattern_label(rec: HeadRecord, cfg: HeadConfig) -> tuple[str, str]:
    """The older pattern-only rule of the module docstring: ``(pattern_label, pattern_reason)`` for one scored head."""
    r2, js = rec.profile_r2, rec.content_js
    if rec.bos_mass >= cfg.sink_min_bos:
        return "sink", f"bos_mass {rec.bos_mass:.2f} >= {cfg.sink_min_bos}"
    if r2 is not None and r2 >= cfg.local_min_r2 and (js is None or js <= cfg.local_max_js):
        js_s = "n/a" if js is None else f"{js:.3f}"
        return "local", f"profile_r2 {r2:.2f} >= {cfg.local_min_r2}, content_js {js_s} <= {cfg.local_max_js}"
    if js is not None and js >= cfg.semantic_min_js:
        for c in rec.top_categories:
            if (c["lift"] is not None and c["lift"] >= cfg.semantic_min_lift and c["excess"] >= cfg.semantic_min_excess
                    and c["p"] <= cfg.alpha):
                return "semantic", (f"content_js {js:.3f} >= {cfg.semantic_min_js}; {c['category']} lift {c['lift']:.2f}, "
                                    f"excess {c['excess']:.3f}, p {c['p']:.4f}")
    r2_s = "n/a" if r2 is None else f"{r2:.2f}"
    js_s = "n/a" if js is None else f"{js:.3f}"
    return "mixed", f"no rule fired (bos_mass {rec.bos_mass:.2f}, profile_r2 {r2_s}, content_js {js_s})"


class HeadJob:
    """:func:`classify_heads` in steps: checks and calibration (on construction), a streaming pass
    feeding :attr:`consumers` (:attr:`main`: the attention scores; :attr:`effects`: the label axes'
    sums and the output effects) over the stories in :attr:`groups`, then :meth:`finish`.

    Build it with the model in eval mode; :func:`tinyinterp.analysis.pipeline.heads_and_neurons`
    shares the pass with the neuron analysis.
    """

    def __init__(self, model, corpus: TaggedCorpus, cfg: HeadConfig, split=None):
        """``split``: a :class:`~tinyinterp.analysis.distributed.RankSplit` under torchrun (this rank runs its
        share of the calibration stories, the sums are added across ranks); None: one process runs them all."""
        if not isinstance(cfg, HeadConfig):
            raise ConfigError(f"config is a {type(cfg).__name__}; pass a HeadConfig")
        self.model, self.corpus, self.cfg = model, corpus, cfg
        self.store, keep, self.lengths = _check_corpus(model, corpus)
        order = np.random.default_rng(cfg.seed).permutation(len(keep))
        n_cal = len(keep) if cfg.calibration_stories is None else min(cfg.calibration_stories, len(keep))
        self.cal_idx = keep[np.sort(order[:n_cal])]
        self.groups = [keep]
        self.cal = calibrate(model, self.store[self.cal_idx], self.lengths[self.cal_idx], cfg.batch_tokens, cfg.seed,
                             cfg.progress, *((None, None) if split is None else (split.owns(self.cal_idx), split.sum)))
        self.main = MainPass(model, self.store, self.cal.profile, cfg.n_permutations, cfg.near_offsets, cfg.seed)
        self.effects = EffectsPass(model, self.store, len(corpus), self.cal.profile, cfg.output_effects)

    @property
    def consumers(self) -> list:
        """What this job adds to a streaming pass."""
        return [self.main, self.effects]

    def finish(self) -> HeadResults:
        """Detector cross-check, scores, labels and evidence from the accumulated statistics."""
        model, cfg = self.model, self.cfg
        det = {}
        if cfg.detector_stories and getattr(model, "tokenizer", None) is not None:
            try:
                det = detector_scores(model, list(self.store[self.cal_idx[: cfg.detector_stories]]),
                                      cfg.detector_exclude_bos, cfg.detector_exclude_current_token)
            except Exception as exc:  # noqa: BLE001 - an optional cross-check must not sink the analysis
                log.warning("TransformerLens head detector failed (%s: %s); tl_* scores left empty", type(exc).__name__, exc)
        res = _results(model, self.corpus, cfg, self.cal, self.main.stats(), det, int(self.lengths[self.groups[0]].sum()))
        res.effects = collect_effects(self.effects, model, self.corpus, cfg.n_boot, cfg.seed, cfg.copying_min_count)
        res.axes = label_heads(res, cfg)
        for rec, row in zip(res.records, res.axes):
            rec.label, rec.reason, rec.positional_r2 = row["label"], row["reason"], row["positional_r2"]
            rec.axes = {k: row[k] for k in ("positional", "content", "sink")}
        res.meta["labels"] = label_counts(r.label for r in res.records)
        log.info("heads: %s", ", ".join(f"{k} {v}" for k, v in res.meta["labels"].items()))
        return res


def classify_heads(model, corpus: TaggedCorpus, config: HeadConfig | None = None) -> HeadResults:
    """Score and label every attention head of ``model`` on ``corpus`` (see the module docstring).

    ``model``: a ``HookedTransformer`` (e.g. from :func:`tinyinterp.load_model`);
    ``corpus``: from :func:`tinyinterp.analysis.corpus.load_corpus` with the model's tokenizer.
    """
    cfg = config if config is not None else HeadConfig()
    with eval_mode(model):
        job = HeadJob(model, corpus, cfg)
        run_pass(model, corpus, job.consumers, job.groups, cfg.batch_tokens, cfg.progress, "heads: scoring")
        return job.finish()


def _results(model, corpus: TaggedCorpus, cfg: HeadConfig, cal, st, det: dict[str, np.ndarray], n_tokens: int) -> HeadResults:
    L, H = model.cfg.n_layers, model.cfg.n_heads
    rows = st.n_rows
    ss_res = st.sq - 2 * st.cross + st.pred_sq  # [L, H]
    ss_tot = st.sq - st.inv_rows
    t_obs = st.obs - st.exp  # [L, H, C]
    # a sign flip that reproduces t_obs up to float32 rounding is a tie and counts (few contributing
    # stories make exact ties common; rounding must not decide them, e.g. between sharded runs)
    tol = 1e-5 * (np.abs(st.obs) + np.abs(st.exp)) + 1e-9  # [L, H, C]
    p_values = (1 + (st.flips >= t_obs[None] - tol[None]).sum(0)) / (1 + cfg.n_permutations)
    max_off = int(np.nonzero(cal.profile_rows)[0].max()) + 1 if cal.profile_rows.any() else 1
    tokenizer = getattr(model, "tokenizer", None)
    records = []
    for layer in range(L):
        for head in range(H):
            r2 = 1.0 - ss_res[layer, head] / ss_tot[layer, head] if ss_tot[layer, head] > 1e-6 * st.sq[layer, head] else None
            rec = _record(layer, head, st, cfg, p_values[layer, head], r2, tokenizer)
            rec.content_js = float(cal.js[layer, head]) if cal.n_rows else None
            rec.offset_profile = cal.profile[layer, head, :max_off].tolist()
            rec.tl_previous_token = _det(det, "previous_token_head", layer, head)
            rec.tl_duplicate_token = _det(det, "duplicate_token_head", layer, head)
            rec.tl_induction = _det(det, "induction_head", layer, head)
            rec.pattern_label, rec.pattern_reason = pattern_label(rec, cfg)
            records.append(_as_python(rec))
    meta = {
        "n_layers": L, "n_heads": H, "n_ctx": model.cfg.n_ctx, "n_stories": st.n_stories,
        "n_tokens": n_tokens, "n_query_rows": int(rows), "calibration_stories": cal.n_stories,
        "detector_stories": min(cfg.detector_stories, cal.n_stories) if det else 0,
        "categories": list(CATEGORIES), "key_categories": list(KEY_CATEGORIES),
        "category_key_share": {c: float(st.cat_keys[i] / max(st.cat_keys[: len(KEY_CATEGORIES)].sum(), 1.0))
                               for i, c in enumerate(CATEGORIES)},
        "spacy_model": corpus.spacy_model, "alignment_coverage": corpus.coverage,
        "attn_types": list(getattr(model.cfg, "attn_types", None) or []) or None,
        "pattern_labels": {lab: sum(r.pattern_label == lab for r in records) for lab in PATTERN_LABELS},
    }
    return HeadResults(records, config=asdict(cfg), meta=meta)


def _record(layer: int, head: int, st, cfg: HeadConfig, p_values: np.ndarray, r2: float | None, tokenizer) -> HeadRecord:
    """One head's scores and evidence from the main-pass sums (calibration and detector scores are filled
    in by the caller). ``r2`` is undefined (None) when the rows are uniform up to float32 rounding of the
    pattern (~1e-7 of sum A^2)."""
    rows = st.n_rows
    cats: dict[str, dict[str, float | None]] = {}
    for c, name in enumerate(CATEGORIES):
        o, e = st.obs[layer, head, c], st.exp[layer, head, c]
        cats[name] = {"mass": o / rows, "expected": e / rows, "excess": (o - e) / rows, "lift": _ratio(o, e),
                      "p": float(p_values[c]) if st.cat_keys[c] > 0 else None}
    ranked = [dict(category=k, **v) for k, v in cats.items()
              if v["lift"] is not None and v["lift"] > 1.0 and v["expected"] >= cfg.min_category_expected]
    ranked.sort(key=lambda d: -(d["excess"] if cfg.rank_categories_by == "excess" else d["lift"]))
    tok_ok = np.nonzero(st.tok_count >= cfg.min_token_count)[0]
    t_obs, t_exp = st.tok_obs[layer, head, tok_ok], st.tok_exp[layer, head, tok_ok]
    excess = (t_obs - t_exp) / rows
    top_tok = [{"token": _decode(tokenizer, int(tok_ok[i])), "id": int(tok_ok[i]), "count": int(st.tok_count[tok_ok[i]]),
                "mass": t_obs[i] / rows, "expected": t_exp[i] / rows, "excess": float(excess[i]),
                "lift": _ratio(t_obs[i], t_exp[i])}
               for i in np.argsort(-excess)[: cfg.top_k] if excess[i] > 1e-6]
    top = ranked[0] if ranked else None
    return HeadRecord(
        layer=layer, head=head, label="mixed", reason="", positional_r2=None, profile_r2=None if r2 is None else float(r2),
        content_js=None, mean_distance=st.dist[layer, head] / rows, near_mass=st.near[layer, head] / rows,
        prev_token=st.prev[layer, head] / rows, entropy=st.entropy[layer, head] / rows,
        entropy_norm=st.entropy_norm[layer, head] / rows, bos_mass=st.bos[layer, head] / rows,
        tl_previous_token=None, tl_duplicate_token=None, tl_induction=None,
        top_category=top["category"] if top else None, top_category_lift=top["lift"] if top else None,
        top_category_p=top["p"] if top else None, top_categories=ranked[: cfg.top_k], top_tokens=top_tok,
        categories=cats)


def _det(det: dict[str, np.ndarray], name: str, layer: int, head: int) -> float | None:
    return float(det[name][layer, head]) if name in det else None


def _as_python(rec: HeadRecord) -> HeadRecord:
    """Replace numpy scalars by Python floats so records compare equal after a JSON round trip."""
    return HeadRecord.from_dict(jsonable(rec.__dict__))
