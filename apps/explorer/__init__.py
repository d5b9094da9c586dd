"""The tinyinterp explorer: a Streamlit app over the public tinyinterp API (``tinyinterp explore``).

``Home.py`` is the entry point; ``views/`` holds one script per page (registered with ``st.navigation``; not ``pages/``, which Streamlit would also auto-detect); ``catalog``, ``store``,
``live``, ``readings`` and ``figures`` are plain Python (no Streamlit) and ``state`` is the
Streamlit glue (model picker, caches, progress).
"""
