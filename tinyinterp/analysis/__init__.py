"""Analysis: part-of-speech tagged corpora, head classification, POS-selective neurons, probes."""
