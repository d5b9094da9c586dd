"""The tinyinterp explorer: a Streamlit app over the public tinyinterp API (``tinyinterp explore``).

``Home.py`` is the entry point; ``views/`` holds one script per page (registered with
``st.navigation``; not ``pages/``, which Streamlit would also auto-detect). ``catalog``,
``store``, ``live``, ``readings``, ``figures``, ``links`` (what a view's URL holds) and
``comparison`` (the Compare page's tables) are plain Python (no Streamlit); ``state`` is the
Streamlit glue (model picker, URL syncing, caches, progress).

A new page (say, SAE features) is a ``views/`` script plus one ``st.Page`` line in ``Home.py``;
its own unit goes into the URL through ``state.from_url``/``state.to_url`` (see ``links``).
"""
