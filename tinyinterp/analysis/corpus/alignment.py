"""Align spaCy words to model tokens by character offsets, and pack aligned stories.

A model token takes the UPOS, fine (Penn) tag and entity type of the spaCy word that
contains its first non-whitespace character. Tokens that do not start their word (the
second BPE piece of " zebrafish", or the second byte of a multi-byte character) are
flagged ``continuation=True`` and carry the word's tags. Whitespace-only tokens get
:data:`SPACE_TAG`; the ``<|endoftext|>`` token prepended to every story gets
:data:`BOS_TAG`. A token whose first non-space character lies in no spaCy word (this
does not happen with spaCy's tokenizer, which covers every non-space character) gets
UPOS ``"X"`` and is counted in ``corpus.meta["n_unaligned_tokens"]``.

:func:`align_story` gives the cacheable record of one story; :func:`pack_record` adds a
record (truncated to ``max_tokens``) to a :class:`~tinyinterp.analysis.corpus.store.StoreBuilder`
and measures alignment coverage: the share of non-space characters, over the words that
begin inside the kept tokens' span, that belong to a word at least one token was aligned to
(a word is missed only when one token swallows its start, e.g. ``!"`` as one token).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tinyinterp.analysis.corpus.store import BOS_TAG, SPACE_TAG, StoreBuilder, TaggedStory

RECORD_FORMAT = 1  # version of align_story's record (part of the tag cache key)
UNALIGNED_UPOS = "X"
_W_BOS, _W_SPACE, _W_NONE = -1, -2, -3  # word index markers for BOS, whitespace and unaligned tokens


def align_story(text: str, doc, input_ids: Sequence[int], offsets: Sequence[Sequence[int]], bos_id: int) -> dict[str, Any]:
    """Align one spaCy ``doc`` of ``text`` to its token ids/offsets (no BOS); the cacheable record.

    Returns ``{"tokens", "offsets", "widx", "cont", "words"}`` with BOS prepended: ``widx[i]``
    is the index into ``words`` (``[start, end, upos, tag, ent]``) of token ``i``'s word, or
    -1 (BOS), -2 (whitespace-only token), -3 (no word found).
    """
    words = [[t.idx, t.idx + len(t.text), t.pos_, t.tag_, t.ent_type_] for t in doc if not t.is_space]
    char2word = np.full(len(text) + 1, _W_NONE, dtype=np.int64)
    for i, (s, e, *_rest) in enumerate(words):
        char2word[s:e] = i
    widx, cont = [_W_BOS], [0]
    last_w = None
    n = len(text)
    for s, e in offsets:
        c = next((j for j in range(s, min(e, n)) if not text[j].isspace()), None)
        if c is None and e <= s and s < n and not text[s].isspace():  # zero-width piece of a multi-byte char
            c = s
        if c is None:
            widx.append(_W_SPACE)
            cont.append(0)
            continue
        w = int(char2word[c])
        if w < 0:
            widx.append(_W_NONE)
            cont.append(0)
            continue
        widx.append(w)
        cont.append(int(c > words[w][0] or w == last_w))
        last_w = w
    return {
        "v": RECORD_FORMAT,
        "tokens": [bos_id, *map(int, input_ids)],
        "offsets": [[0, 0], *([int(s), int(e)] for s, e in offsets)],
        "widx": widx,
        "cont": cont,
        "words": words,
    }


def pack_record(builder: StoreBuilder, text: str, rec: dict[str, Any], max_tokens: int | None,
                 keep_text: bool = True) -> tuple[int, int, int, bool]:
    """Add one (possibly truncated) story to ``builder``; returns covered/total word chars, unaligned count, truncated.

    Without ``keep_text`` the story is stored with empty text and zero offsets (token ids, tags and
    words only: what a streaming pass needs, at about half the memory)."""
    n_all = len(rec["tokens"])
    n = n_all if max_tokens is None else min(n_all, max_tokens)
    offsets = np.asarray(rec["offsets"][:n], dtype=np.int64).reshape(n, 2)
    widx = np.asarray(rec["widx"][:n], dtype=np.int64)
    words = rec["words"]
    truncated = n < n_all
    end_char = int(offsets[-1, 1]) if truncated else len(text)
    # one row per spaCy word, then the rows that widx -3 (unaligned), -2 (space) and -1 (BOS) address
    specials = {"upos": [UNALIGNED_UPOS, SPACE_TAG, BOS_TAG], "tag": ["", SPACE_TAG, BOS_TAG], "ent": ["", "", ""],
                "word": ["", "", ""]}
    cols = {"upos": [w[2] for w in words], "tag": [w[3] for w in words], "ent": [w[4] for w in words],
            "word": [text[w[0]:w[1]] for w in words]}
    codes = {f: builder.encode(f, cols[f] + specials[f])[widx] for f in cols}
    stored = (text[:end_char] if truncated else text) if keep_text else ""
    builder.add(stored, np.asarray(rec["tokens"][:n]), offsets if keep_text else np.zeros((n, 2), dtype=np.int64),
                np.asarray(rec["cont"][:n], dtype=bool), **codes)
    span = np.asarray([w[:2] for w in words], dtype=np.int64).reshape(len(words), 2)
    size = span[:, 1] - span[:, 0]
    aligned = np.zeros(len(words), dtype=bool)
    aligned[widx[widx >= 0]] = True
    inside = span[:, 0] < end_char  # words that begin inside the kept tokens' span
    return int(size[inside & aligned].sum()), int(size[inside].sum()), int((widx == _W_NONE).sum()), truncated


def story_from_record(text: str, rec: dict[str, Any], max_tokens: int | None) -> tuple[TaggedStory, int, int, int]:
    """Build a (possibly truncated) :class:`TaggedStory`; also covered/total word chars and unaligned count."""
    builder = StoreBuilder()
    covered, total, unaligned, _ = pack_record(builder, text, rec, max_tokens)
    return builder.build()[0], covered, total, unaligned

