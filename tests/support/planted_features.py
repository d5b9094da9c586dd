"""A tiny model whose NOUN signal lives in a direction spread over several MLP neurons, and an SAE that reads it.

Stories (made up here) alternate a noun slot and a verb slot: ``BOS n v n v ...``. Words
``NOUN_ONLY`` fill only noun slots, ``VERB_ONLY`` only verb slots, ``AMBIG`` both (so a
token-id lookup cannot tell their tag: only the slot can). The model has no attention output
and no LayerNorm, so ``hook_post = relu(W_E[tok] + W_pos[pos]) @ W_in``: residual dimension 0
is about 1 in noun slots (from the position embedding) and reads into the planted NOUN direction,
spread evenly over neurons ``0..SPREAD-1``; every token also carries two or three other "true
features" (from its embedding), each spread over three of those neurons and five others, so
every NOUN neuron also fires on many verbs. ``planted_sae`` is an SAE whose dictionary is the
true directions and whose encoder is their pseudo-inverse: its feature 0 reads the NOUN direction.
"""

from __future__ import annotations

import numpy as np
import torch

from tinyinterp.analysis.corpus import BOS_TAG, TaggedCorpus, TaggedStory

D_VOCAB, N_TRUE, D_MLP, N_CTX, SPREAD = 64, 24, 32, 40, 8
NOUN_ONLY, VERB_ONLY, AMBIG = list(range(1, 16)), list(range(16, 31)), list(range(31, 61))
HOOK = "blocks.0.mlp.hook_post"


def _story(rng: np.random.Generator) -> TaggedStory:
    toks, upos = [0], [BOS_TAG]
    for _ in range(int(rng.integers(8, 15))):
        toks += [int(rng.choice(NOUN_ONLY + AMBIG)), int(rng.choice(VERB_ONLY + AMBIG))]
        upos += ["NOUN", "VERB"]
    words = [""] + [f"w{t}" for t in toks[1:]]
    text, offsets = "", [(0, 0)]
    for w in words[1:]:
        offsets.append((len(text) + 1, len(text) + 1 + len(w)))
        text += " " + w
    return TaggedStory(text=text, tokens=np.array(toks, dtype=np.int64), offsets=np.array(offsets, dtype=np.int64),
                       upos=upos, tag=list(upos), ent=[""] * len(toks), word=words,
                       continuation=np.zeros(len(toks), dtype=bool))


def slot_corpus(n_stories: int = 200, seed: int = 0) -> TaggedCorpus:
    rng = np.random.default_rng(seed)
    return TaggedCorpus([_story(rng) for _ in range(n_stories)], spacy_model="synthetic")


def directions(seed: int = 0) -> torch.Tensor:
    """``[N_TRUE, D_MLP]`` non-negative unit directions; row 0 (NOUN) spreads evenly over neurons 0..SPREAD-1."""
    g = torch.Generator().manual_seed(seed + 1)
    dirs = torch.zeros(N_TRUE, D_MLP)
    dirs[0, :SPREAD] = 1.0
    for j in range(1, N_TRUE):
        support = torch.cat([torch.randperm(SPREAD, generator=g)[:3], SPREAD + torch.randperm(D_MLP - SPREAD, generator=g)[:5]])
        dirs[j, support] = 0.5 + torch.rand(len(support), generator=g)
    return dirs / dirs.norm(dim=1, keepdim=True)


@torch.no_grad()
def planted_model(seed: int = 0):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=1, d_model=N_TRUE, d_head=8, n_heads=1, d_mlp=D_MLP, d_vocab=D_VOCAB,
                                  n_ctx=N_CTX, act_fn="relu", normalization_type=None, model_name="planted-slot-noun",
                                  seed=seed)
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.zero_()
    for t in range(1, D_VOCAB):  # two or three other true features per token
        others = 1 + torch.randperm(N_TRUE - 1, generator=g)[: 2 + int(torch.rand(1, generator=g) < 0.5)]
        model.embed.W_E[t, others] = 0.5 + 1.5 * torch.rand(len(others), generator=g)
    slots = torch.arange(1, N_CTX, 2)  # noun slots: positions 1, 3, 5, ... (strength grows a little along the story,
    model.pos_embed.W_pos[slots, 0] = 0.8 + 0.4 * slots / N_CTX  # so the top activations are not one tie)
    dirs = directions(seed)
    model.blocks[0].mlp.W_in.copy_(dirs)
    model.blocks[0].mlp.W_out.copy_(torch.linalg.pinv(dirs))  # the MLP writes the true coefficients back
    model.unembed.W_U.copy_(torch.randn(N_TRUE, D_VOCAB, generator=g))
    return model.eval()


def planted_sae(model, seed: int = 0):
    """A ReLU SAE whose decoder rows are the true directions and whose encoder inverts them (feature 0 = NOUN)."""
    from sae_lens import StandardSAE, StandardSAEConfig

    dirs = directions(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=D_MLP, d_sae=N_TRUE, apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_dec.copy_(dirs)
        sae.W_enc.copy_(torch.linalg.pinv(dirs))
        sae.b_enc.fill_(-1e-3)  # float noise of the inverse stays at zero
        sae.b_dec.zero_()
    sae.cfg.metadata.hook_name = HOOK
    sae.cfg.metadata.model_name = model.cfg.model_name
    return sae.eval()
