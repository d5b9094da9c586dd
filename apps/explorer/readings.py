"""Words for the pages: plain-English readings of head labels, score glossary, token HTML, text checks.

Text that comes from files (checkpoints, analyses) or from the URL never reaches a page as
markup: :func:`md` escapes it for Markdown, ``html.escape`` for HTML, and :func:`num` formats
a number that may not be one.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

MAX_CHARS = 5000  # typed text beyond this is cut before tokenising (the context cut comes after)

# What each head score measures, and the control it is read against.
SCORE_HELP: dict[str, tuple[str, str]] = {
    "positional_r2": ("the label's positional axis: held-out R² of a position-only surrogate (the head's mean pattern "
                      "at the same positions over the other stories)",
                      "null: 99th percentile over untrained and content-only heads (HeadConfig.positional_min_r2)"),
    "profile_r2": ("R² of predicting each attention row from the head's mean attention-by-offset profile",
                   "the older pattern rule's score; baseline: the uniform row (R² 0)"),
    "content_js": ("Jensen–Shannon divergence (bits) between rows on the real story and on the same story with its tokens shuffled",
                   "control: the shuffled story; 0 = content does not matter"),
    "mean_distance": ("attention-weighted mean query − key distance (tokens)", "compare with the offset profile"),
    "near_mass": ("attention on the nearest offsets (0..3 by default)", "a uniform head puts little mass here in long stories"),
    "prev_token": ("attention on the previous token", "transformer_lens previous-token detector: tl_previous_token"),
    "entropy": ("mean row entropy (bits)", "entropy_norm divides by the maximum, log2 of visible keys"),
    "entropy_norm": ("row entropy ÷ log2(visible keys)", "1 = uniform attention"),
    "bos_mass": ("attention on the first (BOS) token", "sink rule threshold"),
    "tl_previous_token": ("TransformerLens head detector: previous-token score", "independent implementation"),
    "tl_duplicate_token": ("TransformerLens head detector: duplicate-token score", "independent implementation"),
    "tl_induction": ("TransformerLens head detector: induction score", "independent implementation"),
    "top_category_lift": ("attention on the top category ÷ what the distance profile predicts", "p: randomisation test across stories"),
}

UPOS_COLORS = {
    "NOUN": "#8dd3c7", "PROPN": "#b3de69", "VERB": "#fb8072", "AUX": "#fdb462", "ADJ": "#bebada",
    "ADV": "#fccde5", "PRON": "#80b1d3", "DET": "#d9d9d9", "ADP": "#ffffb3", "CCONJ": "#ccebc5",
    "SCONJ": "#ccebc5", "PART": "#ffed6f", "NUM": "#bc80bd", "INTJ": "#e5c494", "PUNCT": "#f0f0f0",
    "SYM": "#f0f0f0", "X": "#ffffff", "BOS": "#ffffff", "SPACE": "#ffffff",
}


MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+.!|<>:$~^])")  # ":" and "." also stop autolinks (http://, www.)


def md(value: Any, limit: int = 200) -> str:
    """``value`` as literal text inside Streamlit Markdown: no links, images, HTML, directives or LaTeX;
    one line, at most ``limit`` characters."""
    text = " ".join(str(value).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    text = MD_SPECIAL.sub(r"\\\1", text)
    return "\\" + text if text.startswith(("-", "=")) else text  # not a list item or heading rule


MD_IN_HTML = {c: f"&#{ord(c)};" for c in "\\`*_[]()!~$|:"}


def inert_html(fragment: str) -> str:
    """``fragment`` with every character Markdown could read as syntax, in its text (not its tags), written as
    an HTML entity: Streamlit parses ``unsafe_allow_html`` bodies as Markdown first."""
    return re.sub(r">([^<]+)<", lambda m: ">" + "".join(MD_IN_HTML.get(c, c) for c in m.group(1)) + "<", fragment)


def num(x: Any, fmt: str = ".2f") -> str:
    """``format(x, fmt)`` for a finite number; "n/a" for anything else (a file may hold a string or null)."""
    if isinstance(x, bool):
        return "n/a"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return format(v, fmt) if np.isfinite(v) else "n/a"


_f = num


def explain_head(rec: Any, config: dict[str, Any] | None = None) -> str:
    """A few sentences saying why head ``rec`` (a ``HeadRecord``) got its label, with its numbers: each axis
    against its null-derived threshold (analyses without ``rec.axes`` predate the axes: the pattern rule)."""
    axes = getattr(rec, "axes", None)
    if axes:
        return _explain_axes(rec, axes)
    return _explain_pattern(rec, config)


def _explain_axes(rec: Any, axes: dict[str, Any]) -> str:
    name = f"L{int(rec.layer)}H{int(rec.head)}"
    pos, con, sink = axes.get("positional", {}), axes.get("content", {}), axes.get("sink", {})
    verdict = lambda ok: "**passes**" if ok else "fails"  # noqa: E731
    cats = con.get("categories") or []
    best = (f"; its strongest key category is {md(cats[0]['category'], 40)}: lift {_f(cats[0]['lift'])} "
            f"[{_f(cats[0]['ci_low'])}, {_f(cats[0]['ci_high'])}], BH q = {num(cats[0]['q'], '.2g')} "
            f"(null: lift ≥ {num(con.get('min_lift'), 'g')}, q ≤ {num(con.get('fdr'), 'g')})") if cats else ""
    return " ".join([
        f"**{name} is {md(rec.label, 40)}.** Evidence against the nulls (thresholds = 99th percentiles over null heads):",
        f"*positional* — held-out R² of a position-only surrogate {_f(pos.get('r2'))} (null {num(pos.get('min_r2'), 'g')}), "
        f"previous-token score {_f(pos.get('tl_previous_token'))} (≥ {num(pos.get('previous_token_min'), 'g')} counts): "
        f"{verdict(pos.get('pass'))};",
        f"*content* — JS real vs shuffled {_f(con.get('js'), '.3f')} bits (null {num(con.get('min_js'), 'g')}){best}: "
        f"{verdict(con.get('pass'))};",
        f"*sink* — {num(sink.get('bos_mass'), '.0%')} of its attention on the first token (≥ "
        f"{num(sink.get('min_bos'), '.0%')}): {verdict(sink.get('pass'))}.",
        f"The older pattern-only rule said {md(str(rec.pattern_label), 40)}." if getattr(rec, "pattern_label", None) else ""]).strip()


def _explain_pattern(rec: Any, config: dict[str, Any] | None = None) -> str:
    """The pattern-only rule's reading (analyses written before the two-axis labels)."""
    c = {"sink_min_bos": 0.5, "local_min_r2": 0.5, "local_max_js": 0.15, "semantic_min_js": 0.05,
         "semantic_min_lift": 1.5, "near_offsets": 3, **(config or {})}
    name = f"L{int(rec.layer)}H{int(rec.head)}"
    last = "n/a" if num(c["near_offsets"]) == "n/a" else str(int(float(c["near_offsets"])) + 1)
    near = f"{num(rec.near_mass, '.0%')} of its attention falls on the last {last} tokens (itself included)"
    if rec.label == "sink":
        return (f"**{name} is a sink head.** On average {num(rec.bos_mass, '.0%')} of its attention goes to the first token "
                f"(BOS), at least the {num(c['sink_min_bos'], '.0%')} the rule asks for: it parks attention there when "
                f"nothing else is worth reading.")
    if rec.label == "local":
        return (f"**{name} is a local head: it attends by distance.** Its mean attention by offset predicts its "
                f"attention rows with R² = {_f(rec.positional_r2)} (rule: ≥ {num(c['local_min_r2'], 'g')}), and shuffling the "
                f"story's tokens barely changes its pattern (JS = {_f(rec.content_js, '.3f')} bits, rule: ≤ "
                f"{num(c['local_max_js'], 'g')}). {near}; {num(rec.prev_token, '.0%')} on the previous token alone.")
    if rec.label == "semantic":
        cat = md(rec.top_category or "some category", 40)
        return (f"**{name} is a semantic head: it attends by content.** Shuffling the tokens changes its pattern "
                f"(JS = {_f(rec.content_js, '.3f')} bits, rule: ≥ {num(c['semantic_min_js'], 'g')}), and it attends to "
                f"{cat} keys {_f(rec.top_category_lift, '.1f')}× as much as its distance profile predicts "
                f"(p = {_f(rec.top_category_p, '.3f')}; rule: lift ≥ {num(c['semantic_min_lift'], 'g')}). "
                f"Its mean attention distance is {num(rec.mean_distance, '.1f')} tokens.")
    parts = [f"**{name} is mixed: neither the local nor the semantic rule fires cleanly.**",
             f"Distance explains its rows with R² = {_f(rec.positional_r2)} and shuffling changes them by "
             f"JS = {_f(rec.content_js, '.3f')} bits; {near}."]
    if rec.top_category:
        parts.append(f"Its strongest content preference is {md(rec.top_category, 40)} "
                     f"(×{_f(rec.top_category_lift, '.1f')}, p = {_f(rec.top_category_p, '.3f')}).")
    return " ".join(parts)


def score_table(rec: Any) -> list[dict[str, Any]]:
    """Rows (score, value, meaning, control) for one head."""
    rows = []
    for name, (meaning, control) in SCORE_HELP.items():
        v = getattr(rec, name, None)
        shown = num(v, ".4f")
        rows.append({"score": name, "value": None if shown == "n/a" else float(shown), "meaning": meaning,
                     "control / reference": control})
    return rows


def pos_html(tokens: Sequence[str], tags: Sequence[str]) -> str:
    """Tokens as spans coloured by UPOS tag (hover shows the tag)."""
    spans = []
    for t, tag in zip(tokens, tags):
        color = UPOS_COLORS.get(tag, "#ffffff")
        spans.append(f'<span title="{html.escape(tag)}" style="background:{color};padding:1px 1px;'
                     f'border-radius:3px;margin:0 1px">{html.escape(t)}</span>')
    return '<div style="line-height:2.0;font-family:monospace">' + "".join(spans) + "</div>"


def pos_legend(tags: Sequence[str]) -> str:
    seen = [t for t in dict.fromkeys(tags) if t not in ("BOS", "SPACE")]
    return " ".join(f'<span style="background:{UPOS_COLORS.get(t, "#fff")};padding:1px 4px;border-radius:3px">'
                    f"{html.escape(t)}</span>" for t in seen)


def attention_row_html(tokens: Sequence[str], weights: np.ndarray, query: int) -> str:
    """Token-to-token view: every key shaded by the attention the ``query`` token pays it."""
    w = np.asarray(weights, dtype=float)
    spans = []
    for i, t in enumerate(tokens):
        style = "outline:2px solid #d62728;" if i == query else ""
        a = float(w[i]) if i < len(w) and i <= query else 0.0
        spans.append(f'<span title="{a:.3f}" style="{style}background:rgba(31,119,180,{min(1.0, a):.2f});'
                     f'padding:1px 1px;margin:0 1px">{html.escape(t)}</span>')
    return '<div style="line-height:2.0;font-family:monospace">' + "".join(spans) + "</div>"


@dataclass
class PreparedText:
    text: str  # what the model sees (possibly cut)
    notice: str | None  # why it was cut, for the page
    n_tokens: int  # tokens including BOS


def prepare_text(tokenizer, text: str, n_ctx: int, room: int = 0) -> PreparedText:
    """Strip ``text`` and cut it to fit ``n_ctx - room`` tokens (BOS included), saying so.

    Raises ``ValueError`` with a hint when the text is empty.
    """
    text = (text or "").strip()
    if not text:
        raise ValueError("Type some text first, for example: “Once upon a time, Lily found a red ball.”")
    notice = None
    if len(text) > MAX_CHARS:
        text, notice = text[:MAX_CHARS], f"Your text is longer than {MAX_CHARS:,} characters; only the start is used."
    limit = max(2, n_ctx - room)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if len(ids) + 1 > limit:
        end = offsets[limit - 2][1]
        text = text[:end]
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 > limit and text:
            text = text[:-1]  # re-tokenising a cut word can add a token; trim until it fits
        notice = (f"Your text is {len(ids) + 1:,} tokens (with BOS) but the model reads at most {limit:,}; "
                  f"it was cut to the first {limit:,} tokens.")
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
    return PreparedText(text, notice, n)


def example_html(ex: Any) -> str | None:
    """One max-activating example (an entry of ``neuron_examples.json``) as HTML, every value from the file
    escaped or formatted as a number; None when the entry is not a usable example."""
    from tinyinterp.plots import text_activation_html  # escapes the tokens

    if not isinstance(ex, dict) or not isinstance(ex.get("text"), list) or not isinstance(ex.get("acts"), list):
        return None
    toks, acts = [str(t) for t in ex["text"]], [num(a, ".6g") for a in ex["acts"]]
    if not toks or len(toks) != len(acts) or "n/a" in acts:
        return None
    word = f" · word “{html.escape(str(ex['word']))}” ({html.escape(str(ex.get('tag', '?')))})" if ex.get("word") else ""
    return inert_html(f"<div style='font-family:monospace'>{text_activation_html(toks, np.asarray(acts, dtype=float))}"
                      f"</div><small>max activation {num(ex.get('activation'), '.3f')}{word}</small>")
