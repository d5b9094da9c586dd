"""Entry point of the explorer: ``tinyinterp explore [CKPT]``.

Or directly: ``streamlit run apps/explorer/Home.py --server.headless true -- [CKPT]`` (without
``--server.headless true`` Streamlit's first run asks for an email on stdin).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `streamlit run` puts only this folder on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="tinyinterp explorer", page_icon=":material/search:", layout="wide")
page = st.navigation([
    st.Page("views/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("views/heads.py", title="Heads", icon=":material/visibility:"),
    st.Page("views/neurons.py", title="Neurons", icon=":material/memory:"),
    st.Page("views/features.py", title="Features", icon=":material/scatter_plot:"),
    st.Page("views/playground.py", title="Playground", icon=":material/edit_note:"),
    st.Page("views/dynamics.py", title="Training dynamics", icon=":material/timeline:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
])  # each page's URL path is its file name (/heads, /compare…); links.py lists the query parameters
page.run()
