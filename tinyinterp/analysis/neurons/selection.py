"""Part-of-speech-selective MLP neurons, selected on one half of the stories, reported on the other.

For every MLP neuron × UPOS tag with enough support, :func:`find_pos_neurons` streams the
corpus once per half (see :mod:`tinyinterp.analysis.neurons.stats` for the binned AUROC,
average precision and Mann–Whitney method) and:

* **selects** on the selection half: a neuron × tag pair is ``selected`` when its AUROC there
  reaches ``auroc_threshold``; every neuron's best tag on that half is reported too;
* **reports** on the held-out half: AUROC, AP, Cohen's d, mean difference, one-sided p-value,
  Benjamini–Hochberg q-value over *all* neuron × tag tests with support on that half,
  precision of the top-k activations, and the token-identity controls (distinct word types
  among the top-k; AUROC restricted to ambiguous words, i.e. word types that carry this tag
  and another one at least ``ambiguous_min_count`` times each in the corpus);
* a row is ``selective`` when selected, its held-out AUROC ≥ ``auroc_threshold`` and its
  q-value < ``fdr``;
* **controls** with an untrained model of the same architecture (random init, fixed seed)
  analysed the same way; it should find ≈ 0 selective neurons.

Reading the controls: a neuron that detects one word (or one position, e.g. the "upon" of
"Once upon a time") looks selective for a tag dominated by that word; random untrained
neurons do this too. Such rows show few word types in the top-k (``n_word_types_top_k``,
``top_k_word_share`` near 1), an ambiguous-word AUROC near 0.5, and the untrained control
finds neurons for the same tag (``summary["untrained_control"]["selective_per_tag"]``;
``summary["tag_word_types"]`` says how many word types each tag has). Open-class tags
(NOUN, VERB, ADJ) have too many word types for a random neuron to reach a high AUROC.

Tokens analysed: BOS and whitespace tokens are left out (``exclude_tags``); continuation
tokens (the 2nd, 3rd … token of a word) are left out by default, so each word counts once,
at its first token (``include_continuations=True`` keeps them, with their word's tag).
"""

from __future__ import annotations

from tinyinterp.analysis.corpus.labels import CorpusLabels
from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.neurons.config import NeuronConfig
from tinyinterp.analysis.neurons.job import run_neuron_job
from tinyinterp.analysis.neurons.results import NeuronResults


def find_pos_neurons(model, corpus: TaggedCorpus, config: NeuronConfig | None = None, *,
                     label: str = "neurons", labels: CorpusLabels | None = None) -> NeuronResults:
    """Find MLP neurons selective for a part of speech; see the module docstring for the method.

    ``label`` prefixes the progress bars (the untrained control runs as "untrained control").
    ``labels``: an existing ``label_corpus(corpus, ...)`` with this config's options, to share its memory.
    The corpus is streamed once (selection half, then held-out half) after a calibration pass
    on up to ``calib_tokens`` selection-half tokens; see :class:`~tinyinterp.analysis.neurons.job.NeuronJob`.

    >>> res = find_pos_neurons(model, corpus)            # doctest: +SKIP
    >>> res.selective("NOUN").head()                     # doctest: +SKIP
    """
    return run_neuron_job(model, corpus, config or NeuronConfig(), label, labels)
