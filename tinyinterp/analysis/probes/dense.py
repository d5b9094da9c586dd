"""Layer-wise linear probes for part of speech, with Hewitt & Liang control-task selectivity.

For each site — the embedding (residual stream before block 0), the residual stream after
every block, and the MLP activations of every block — :func:`probe_layers` fits a
multinomial logistic regression (scikit-learn, standardised features) that predicts UPOS
from the activation at each analysed token. Probes are trained on tokens of one half of the
stories (``TaggedCorpus.split``) and scored on the other, at most ``max_tokens`` tokens per
half (whole stories, drawn in a seeded random order).

Control task (Hewitt & Liang 2019): every word type gets a random tag, drawn once from the
empirical tag distribution of the training tokens; the same probe is trained on those labels.
``selectivity = accuracy(POS) - accuracy(control)`` (held-out). High selectivity means the
representation encodes the tag beyond what a probe can memorise from word identity. Two
reference points come along: the majority-tag accuracy, and a word-lookup baseline (each
word's most frequent training tag).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tinyinterp.analysis.corpus.labels import CorpusLabels, label_corpus
from tinyinterp.analysis.corpus.store import BOS_TAG, SPACE_TAG, TaggedCorpus
from tinyinterp.analysis.engine import EMBED_LAYER, mlp_hook, resid_hook, stream_activations
from tinyinterp.analysis.results_io import JsonResult, jsonable
from tinyinterp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PROBES_JSON = "probes.json"
SITES = ("embed", "resid", "mlp")


@dataclass
class ProbeConfig:
    max_tokens: int = 8000
    """Analysed tokens per half (train / test); whole stories are taken until the cap."""
    layers: list[int] | None = None
    """Blocks whose residual / MLP sites are probed (None: all)."""
    sites: tuple[str, ...] = SITES
    """Which kinds of site: ``embed``, ``resid`` (after each block), ``mlp`` (MLP activations)."""
    include_continuations: bool = False
    """Probe continuation tokens too (with their word's tag); default: word-initial tokens only."""
    exclude_tags: tuple[str, ...] = (BOS_TAG, SPACE_TAG)
    """Tags whose tokens are never probed."""
    C: float = 1.0
    """Inverse L2 regularisation strength of the logistic regression."""
    max_iter: int = 200
    """L-BFGS iterations per probe (a non-converged probe is flagged, not an error)."""
    split_seed: int = 0
    """Seed of ``TaggedCorpus.split``: training half vs test half."""
    control_seed: int = 0
    """Seed of the random word-type → tag assignment of the control task."""
    batch_tokens: int = 8192
    """Padded tokens per forward batch."""
    identity: bool = True
    """Score every probe against the lexical baselines (token-id lookup, embedding probe) on ambiguous words and
    unseen token ids (:mod:`tinyinterp.analysis.probes.identity`); a site's ``beyond_identity`` lists the tags
    where it beats the lookup."""
    n_boot: int = 500
    """Story-bootstrap resamples of those tests."""
    progress: bool = False
    """Show tqdm progress bars."""

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_iter", "batch_tokens", "n_boot"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"ProbeConfig.{name}={v!r}: must be a positive integer")
        if not self.C > 0:
            raise ConfigError(f"ProbeConfig.C={self.C!r}: must be > 0")
        self.sites, self.exclude_tags = tuple(self.sites), tuple(self.exclude_tags)
        bad = sorted(set(self.sites) - set(SITES))
        if bad or not self.sites:
            raise ConfigError(f"ProbeConfig.sites={list(self.sites)!r}: choose from {list(SITES)}")
        if self.layers is not None:
            self.layers = [int(x) for x in self.layers]


@dataclass
class ProbeResults(JsonResult):
    """One row per site (see :meth:`to_frame`) and a summary with the baselines; ``save(folder)`` writes
    ``probes.json`` (``{"probes": rows, "summary": ...}``), ``load(folder)`` reads it."""

    FILE: ClassVar[str] = PROBES_JSON

    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"probes": self.rows, "summary": self.summary}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProbeResults":
        return cls(rows=list(d["probes"]), summary=dict(d.get("summary", {})))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "ProbeResults":
        return cls.from_dict(json.loads(text))

    def to_json_obj(self) -> dict[str, Any]:
        return self.to_dict()

    @classmethod
    def from_json_obj(cls, data: Any) -> "ProbeResults":
        return cls.from_dict(data)


def _sites(model, cfg: ProbeConfig) -> list[tuple[str, int, str]]:
    """(kind, layer, hook name) of every probed site, in depth order."""
    n = model.cfg.n_layers
    layers = list(range(n)) if cfg.layers is None else cfg.layers
    if any(not 0 <= x < n for x in layers):
        raise ConfigError(f"ProbeConfig.layers={layers}: out of range for a {n}-layer model")
    out = [("embed", EMBED_LAYER, resid_hook(EMBED_LAYER))] if "embed" in cfg.sites else []
    for x in layers:
        if "mlp" in cfg.sites and model.cfg.d_mlp is not None and not model.cfg.attn_only:
            out.append(("mlp", x, mlp_hook(x)))
        if "resid" in cfg.sites:
            out.append(("resid", x, resid_hook(x)))
    return out


def token_activations(model, corpus: TaggedCorpus, hooks: list[str], stories: np.ndarray | None = None, *,
                      labels: CorpusLabels | None = None, batch_tokens: int = 8192, progress: bool = False,
                      desc: str = "activations", with_ids: bool = False) -> tuple:
    """Activations at ``hooks`` of the analysed tokens of ``stories`` (default: all), as the neuron analysis
    and the probes see them: no BOS, whitespace or word-continuation tokens (see :func:`label_corpus`).

    Returns float32 features per hook ``[tok, d]``, and per token its tag id and word id (indices into
    ``labels.tags`` / ``labels.words``; ``labels`` defaults to ``label_corpus(corpus)``). Tokens come in
    batch order (stories sorted by length). ``with_ids``: also each token's id and story index (the lexical
    baselines need them).
    """
    labels = labels if labels is not None else label_corpus(corpus)
    feats: dict[str, list[np.ndarray]] = {h: [] for h in hooks}
    tags, words, ids, story = [], [], [], []
    for bt in stream_activations(model, corpus, hooks, batch_tokens, stories, progress, desc):
        b, p, t, w = labels.analysed(bt.stories, bt.mask)
        for h in hooks:
            feats[h].append(bt.acts[h][b.to(bt.acts[h].device), p.to(bt.acts[h].device)].float().cpu().numpy())
        tags.append(t.numpy())
        words.append(w.numpy())
        ids.append(bt.tokens[b.to(bt.tokens.device), p.to(bt.tokens.device)].cpu().numpy())
        story.append(np.asarray(bt.stories)[b.numpy()])
    empty = np.zeros(0, np.int64)
    out = (({h: np.zeros((0, 0), np.float32) for h in hooks}, empty, empty, empty, empty) if not tags else
           ({h: np.concatenate(v) for h, v in feats.items()}, np.concatenate(tags), np.concatenate(words),
            np.concatenate(ids), np.concatenate(story)))
    return out if with_ids else out[:3]


def collect_features(model, corpus: TaggedCorpus, labels: CorpusLabels, indices: np.ndarray, hooks: list[str],
                     cfg: ProbeConfig, desc: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """:func:`token_activations` of up to ``max_tokens`` tokens of ``indices``, whole stories in a seeded random
    order: features per hook, tag ids, word ids, and ``{"token_ids", "story"}``."""
    take = labels.sample_stories(indices, cfg.max_tokens, cfg.split_seed + 7)
    feats, tags, words, ids, story = token_activations(model, corpus, hooks, take, labels=labels,
                                                       batch_tokens=cfg.batch_tokens, progress=cfg.progress, desc=desc,
                                                       with_ids=True)
    n = cfg.max_tokens
    return {h: v[:n] for h, v in feats.items()}, tags[:n], words[:n], {"token_ids": ids[:n], "story": story[:n]}


def _fit_score(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, cfg: ProbeConfig):
    """Train accuracy, test accuracy and whether L-BFGS converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_tr)) < 2:  # a constant label: the probe is the constant
        return float(np.mean(y_tr == y_tr[0])), float(np.mean(y_te == y_tr[0])), True
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.C, max_iter=cfg.max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    converged = bool(np.all(clf[-1].n_iter_ < cfg.max_iter))
    return float(clf.score(x_tr, y_tr)), float(clf.score(x_te, y_te)), converged


def probe_layers(model, corpus: TaggedCorpus, config: ProbeConfig | None = None) -> ProbeResults:
    """Train UPOS probes at every site on one half of the stories; score them on the other half.

    >>> res = probe_layers(model, corpus)                 # doctest: +SKIP
    >>> res.to_frame()[["site", "accuracy", "selectivity"]]  # doctest: +SKIP
    """
    cfg = config or ProbeConfig()
    if len(corpus) < 2:
        raise DataError(f"corpus has {len(corpus)} stories; probing needs at least 2 (train and test halves)")
    labels = label_corpus(corpus, cfg.include_continuations, cfg.exclude_tags)
    if len(labels.tags) < 2:
        raise DataError(f"corpus has {len(labels.tags)} analysable tag(s) ({labels.tags}); need at least 2")
    sites = _sites(model, cfg)
    hooks = [h for _, _, h in sites]
    halves = corpus.split_indices(cfg.split_seed)
    x_tr, y_tr, w_tr, i_tr = collect_features(model, corpus, labels, halves[0], hooks, cfg, "probes: train half")
    x_te, y_te, w_te, i_te = collect_features(model, corpus, labels, halves[1], hooks, cfg, "probes: test half")
    if len(y_tr) == 0 or len(y_te) == 0:
        raise DataError("a corpus half has no analysable tokens; use more stories")

    n_tags = len(labels.tags)
    freq = np.bincount(y_tr, minlength=n_tags) / len(y_tr)
    control = np.random.default_rng(cfg.control_seed).choice(n_tags, size=len(labels.words), p=freq)  # word -> tag
    c_tr, c_te = control[w_tr], control[w_te]
    majority = int(freq.argmax())
    word_tag = np.zeros((len(labels.words), n_tags), dtype=np.int64)
    np.add.at(word_tag, (w_tr, y_tr), 1)
    lookup = np.where(word_tag.sum(1) > 0, word_tag.argmax(1), majority)  # unseen words: majority tag

    rows = []
    for kind, layer, hook in tqdm(sites, desc="probes: fit", disable=not cfg.progress, leave=False):
        tr_acc, acc, conv = _fit_score(x_tr[hook], y_tr, x_te[hook], y_te, cfg)
        c_tr_acc, c_acc, c_conv = _fit_score(x_tr[hook], c_tr, x_te[hook], c_te, cfg)
        rows.append({"site": "embed" if kind == "embed" else f"{kind}{layer}", "kind": kind, "layer": layer,
                     "hook": hook, "accuracy": acc, "control_accuracy": c_acc, "selectivity": acc - c_acc,
                     "train_accuracy": tr_acc, "control_train_accuracy": c_tr_acc, "n_features": x_tr[hook].shape[1],
                     "n_train": len(y_tr), "n_test": len(y_te), "converged": conv and c_conv})
        log.info("probe %s: accuracy %.3f, control %.3f", rows[-1]["site"], acc, c_acc)
    summary = {
        "tags": labels.tags, "n_train": len(y_tr), "n_test": len(y_te),
        "majority_accuracy": float(np.mean(y_te == majority)),
        "word_lookup_accuracy": float(np.mean(lookup[w_te] == y_te)),
        # ceiling of the control task for a probe that memorises training words (unseen: majority)
        "control_word_lookup_accuracy": float(np.mean(
            np.where(word_tag.sum(1)[w_te] > 0, c_te, np.bincount(c_tr, minlength=n_tags).argmax()) == c_te)),
        "config": dataclasses.asdict(cfg),
    }
    if cfg.identity:
        _identity(model, rows, sites, (x_tr, (y_tr, w_tr, i_tr)), (x_te, (y_te, w_te, i_te)), labels, summary, cfg)
    return ProbeResults(rows=rows, summary=summary)


def _identity(model, rows, sites, train, test, labels, summary, cfg: ProbeConfig) -> None:
    """Lexical baselines in the summary; per site the probe's identity tests and ``beyond_identity`` tags."""
    from tinyinterp.analysis.neurons.baselines import probe_scorer
    from tinyinterp.analysis.neurons.identity import IdentityConfig
    from tinyinterp.analysis.probes.identity import halves_units, lexical_summary, probe_identity

    idc = IdentityConfig(n_boot=cfg.n_boot)
    units = [halves_units(train[0][h], test[0][h], train[1], test[1], labels.tags, labels.words) for _, _, h in sites]
    lex = lexical_summary(units[0], model.W_E.detach().cpu().numpy(), idc)
    summary["lexical_baseline"] = jsonable(lex["per_tag"])  # NaN (no support) as null, as saved
    summary["token_lookup_accuracy"] = lex["accuracy"]["lookup"]
    summary["embedding_probe_accuracy"] = lex["accuracy"].get("embedding")
    for row, ua in tqdm(list(zip(rows, units)), desc="probes: identity tests", disable=not cfg.progress, leave=False):
        pid = probe_identity(ua, probe_scorer(C=cfg.C, max_train=cfg.max_tokens), lex["_full"], idc)
        row["beyond_identity"], row["identity"] = pid["beyond_identity"], jsonable(pid["per_tag"])
