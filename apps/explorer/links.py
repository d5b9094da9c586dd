"""Shareable views: what the URL says and how it is read (no Streamlit here; ``state`` does the syncing).

A view is the page (the URL path, ``st.navigation``'s ``url_path``: ``/heads``, ``/neurons``,
``/compare``…) plus query parameters, each owned by one page:

========  =====================  =====================================================
param     pages                  value
========  =====================  =====================================================
model     every page             a picker entry's name (``ts-1l``) or a folder path
head      Heads                  ``L{layer}H{head}``, e.g. ``L0H3``
neuron    Neurons                ``L{layer}N{neuron}``, e.g. ``L0N812``
feature   Features               ``L{layer}F{feature}`` (of the chosen SAE), e.g. ``L0F17``
a, b      Compare                a model as above, ``@STEP`` for a training snapshot
========  =====================  =====================================================

A new page with a unit of its own adds a row here and calls ``state.from_url``/``state.to_url``
with its parameter, as the Heads and Features pages do.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

from apps.explorer.readings import md

MODEL = "model"
UNIT = re.compile(r"^L(\d{1,6})([A-Z])(\d{1,9})$")
KINDS = {"H": ("head", "heads"), "N": ("neuron", "neurons"), "F": ("feature", "features")}


def unit_id(kind: str, layer: int, index: int) -> str:
    """``L0H3`` (kind H), ``L0N812`` (kind N): how a head or neuron is named in URLs and on the pages."""
    return f"L{int(layer)}{kind}{int(index)}"


def parse_unit(text: str, kind: str, n_layers: int, n_units: int, model: str) -> tuple[tuple[int, int] | None, str | None]:
    """``(layer, index)`` of a URL value like ``L0H3``, or ``(None, one-line Markdown message)`` when it names
    nothing (the URL's text in it escaped)."""
    one, many = KINDS[kind]
    m = UNIT.match(str(text).strip().upper())
    last = unit_id(kind, n_layers - 1, n_units - 1)
    if m is None or m.group(2) != kind:
        return None, (f"The link asks for {one} “{md(text, 40)}”, which is not a {one} name "
                      f"(write it like {unit_id(kind, 0, 0)}); showing the first {one}.")
    layer, index = int(m.group(1)), int(m.group(3))
    if layer >= n_layers or index >= n_units:
        return None, (f"The link asks for {one} {unit_id(kind, layer, index)}, but {md(model)} has {n_layers} "
                      f"layer{'s' if n_layers != 1 else ''} of {n_units} {many} ({unit_id(kind, 0, 0)}–{last}); "
                      f"showing the first {one}.")
    return (layer, index), None


def split_side(value: str) -> tuple[str, int | None]:
    """``"ts-4l@250"`` → ``("ts-4l", 250)`` (a training snapshot); ``"ts-4l"`` → ``("ts-4l", None)``."""
    head, sep, tail = str(value).rpartition("@")
    if sep and tail.isdigit() and head:
        return head, int(tail)
    return str(value), None


def side_id(model: str, step: int | None) -> str:
    return model if step is None else f"{model}@{step}"


def model_id(path: Path, names: dict[str, Path]) -> str:
    """How the URL names a checkpoint: its picker name when that name is unambiguous, else its path."""
    path = Path(path)
    return path.name if names.get(path.name) == path else str(path)


def view_url(base: str, page: str = "", **params: str | None) -> str:
    """``http://host:port/heads?model=ts-1l&head=L0H3`` (empty parameters left out)."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{base.rstrip('/')}/{page.strip('/')}" + (f"?{query}" if query else "")
