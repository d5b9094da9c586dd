"""Analysis of a model on a tagged corpus: heads, neurons, probes. Data flows top to bottom::

    corpus/        stories -> spaCy tags aligned to model tokens (TaggedCorpus), integer labels
    engine.py      the one batcher, streaming runner (run_pass), hook runner and single-text forward
    heads/         calibration -> streaming scores -> label rule (classify_heads) -> HeadResults
    neurons/       streaming unit x tag statistics (+ kept activations) -> identity categories pos/token/untestable,
                   lexical baselines, untrained control (find_pos_neurons) -> NeuronResults; matched ablation
    features/      SAE features as units through the neuron rules (find_pos_features) -> FeatureResults;
                   best neuron vs best feature per tag, ablation through the SAE's error term
    probes/        dense probes per site (probe_layers), k-sparse probes (sparse_probe_curve), each against the
                   token-id lookup and the embedding probe
    stats.py       story-level statistics (cluster bootstrap, weighted AUROC, BH q-values)
    results_io.py  the one results convention: save(folder)/load(folder), JSON sanitiser, folder lock
    sharding.py    `analyze --shard i/n` and the merge of the shards' statistics
    pipeline.py    analyze(): every stage, written to one folder
    heap.py        return freed memory to the OS between batches

The public names are exported by :mod:`tinyinterp` (``tinyinterp.classify_heads`` ...).
"""
