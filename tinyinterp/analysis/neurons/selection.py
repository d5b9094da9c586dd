"""Part-of-speech neurons that survive token identity: selected on one half of the stories, decided on the other.

:func:`find_pos_neurons` streams the corpus once (selection half, then held-out half) and
decides, for every MLP neuron × UPOS tag the selection half selects (AUROC >= 0.9 on one
token-id fold), one category (:mod:`~tinyinterp.analysis.neurons.identity`):

* ``pos`` — replicated on the held-out half (AUROC >= 0.9, story-bootstrap p with BH q < 0.05
  over every row) and selective beyond token identity: it generalises to token ids unseen when
  selecting, tells ambiguous words apart within one token id ("play" the noun vs the verb;
  story-bootstrap CI above 0.5, BH), and spans >= 5 word types among its top activations;
* ``token`` — replicated, but an identity test fails (one or a few word types carry it);
* ``untestable`` — replicated, a deciding test lacks support (or cannot run: streaming runs);
* None — not replicated.

Sensitivity (AUROC) and specificity (precision among the top activations, AP lift over the
base rate) are reported side by side, with the paper's form ("fires only on adjectives": >= 90%
one tag among the top 50 held-out activations across >= 10 word types) and the lexical
baselines (token-id lookup, embedding probe) per tag. The same analysis runs on an untrained
model of the same shape (the control; it should have no ``pos`` row).

By default every analysed token's activations are kept in memory (exact AUROC/AP, story
bootstrap, identity tests; 4 bytes x tokens x neurons). Sharded and torchrun runs stream
instead (``NeuronConfig.in_memory=False``): binned AUROC, AP with an exact top tail, the
word-type test from the top-k; the other identity tests are reported ``untestable``, never
passed silently. Rows, columns and counts: :mod:`~tinyinterp.analysis.neurons.decision`.

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
    """Decide for every neuron × tag tested whether it is a ``pos`` neuron, a ``token`` detector or
    ``untestable``; see the module docstring for the method.

    ``label`` prefixes the progress bars (the untrained control runs as "untrained control").
    ``labels``: an existing ``label_corpus(corpus, ...)`` with this config's options, to share its memory.
    The corpus is streamed once (selection half, then held-out half) after a calibration pass
    on up to ``calib_tokens`` selection-half tokens; see :class:`~tinyinterp.analysis.neurons.job.NeuronJob`.

    >>> res = find_pos_neurons(model, corpus)            # doctest: +SKIP
    >>> res.category("pos", "NOUN").head()               # doctest: +SKIP
    >>> res.tag_table()                                  # doctest: +SKIP
    """
    return run_neuron_job(model, corpus, config or NeuronConfig(), label, labels)
