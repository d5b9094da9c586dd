"""The output-effect consumer of the shared streaming pass: per-story sums behind every head effect.

:class:`EffectsPass` is a :class:`~tinyinterp.analysis.engine.PassConsumer` with ``state_dict()`` /
``merge_state()``, so it rides in the one forward pass of ``tinyinterp analyze`` next to the head
and neuron statistics (:class:`~tinyinterp.analysis.sharding.Jobs`), and ``--shard`` merges and
torchrun ranks add its sums. Every sum is kept **per story** (arrays ``[n_stories, ...]``, zero for
stories another shard streamed), so the story bootstrap of :mod:`tinyinterp.analysis.heads.effects`
works on the merged statistics exactly as on one process. What the numbers mean: see
:mod:`tinyinterp.analysis.heads.effects`.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import einsum
from jaxtyping import Float
from torch import Tensor

from tinyinterp.analysis.corpus.store import StoryStore
from tinyinterp.analysis.engine import PassBatch
from tinyinterp.analysis.heads.scores import (KEY_CATEGORIES, UPOS_CATEGORIES, PredictedPatterns, _category_tables,
                                             _key_categories)

__all__ = ["NEXT_GROUPS", "FUNCTION", "CONTENT", "EffectsPass", "next_groups", "unembed_directions"]

FUNCTION = ("DET", "ADP", "AUX", "PRON", "CCONJ", "SCONJ", "PART")
CONTENT = ("NOUN", "PROPN", "VERB", "ADJ")
NEXT_GROUPS = (*UPOS_CATEGORIES, "NAME", "FUNCTION", "CONTENT", "ALL")
_G = {g: i for i, g in enumerate(NEXT_GROUPS)}


def _tables(store: StoryStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Code tables: UPOS code -> group index (-1 none), is-PROPN, is-PERSON (last entry: padding)."""
    upos, ent = store.vocab["upos"], store.vocab["ent"]
    grp = np.array([_G.get(u, -1) if u in UPOS_CATEGORIES else -1 for u in upos] + [-1], dtype=np.int64)
    propn = np.array([u == "PROPN" for u in upos] + [False])
    person = np.array([e == "PERSON" for e in ent] + [False])
    return grp, propn, person


def next_groups(store: StoryStore, idx: np.ndarray, n: int, lengths: np.ndarray, tables) -> np.ndarray:
    """float32 ``[B, n, G]``: multi-hot group of the token predicted at each position (the next token).

    Category groups count word-initial next tokens only; ``ALL`` every position with a next token.
    """
    grp_t, propn_t, person_t = tables
    upos = store.padded("upos", idx, n + 1)[:, 1:]  # code of the next token's word; -1 past the end
    ent = store.padded("ent", idx, n + 1)[:, 1:]
    cont = store.padded("cont", idx, n + 1, fill=1)[:, 1:].astype(bool)
    B = len(idx)
    out = np.zeros((B, n, len(NEXT_GROUPS)), dtype=np.float32)
    has_next = np.arange(n)[None, :] < (np.asarray(lengths)[:, None] - 1)
    g = grp_t[upos]
    start = has_next & ~cont
    b, p = np.nonzero(start & (g >= 0))
    out[b, p, g[b, p]] = 1.0
    out[..., _G["NAME"]] = start & (propn_t[upos] | person_t[ent])
    out[..., _G["FUNCTION"]] = out[..., [_G[u] for u in FUNCTION]].max(-1)
    out[..., _G["CONTENT"]] = out[..., [_G[u] for u in CONTENT]].max(-1)
    out[..., _G["ALL"]] = has_next
    return out


def unembed_directions(model) -> Float[Tensor, "d_model d_vocab"]:
    """``w_ln ⊙ W_U`` centred over the vocabulary and over ``d_model`` (see the module docstring)."""
    W_U = model.W_U.detach().float()
    ln = getattr(model, "ln_final", None)
    w = getattr(ln, "w", None)
    U = W_U * w.detach().float()[:, None] if w is not None else W_U
    U = U - U.mean(1, keepdim=True)  # relative to the average token
    if ln is not None and model.cfg.normalization_type in ("LN", "LNPre"):
        U = U - U.mean(0, keepdim=True)  # LayerNorm centres the residual: only the centred head output counts
    return U


class EffectsPass:
    """A :class:`~tinyinterp.analysis.engine.PassConsumer`: per-story sums of direct logit attribution
    by next-token group, attention conditioned on the next token, category lift against ``profile``
    (``[L, H, n_ctx]`` offset profile, or None to skip), the position-only surrogate's cell sums and
    the mean ``z`` of every head.

    ``output_effects=False`` keeps only what the head *labels* need (lift sums and the surrogate),
    so the forward may stop after the last attention pattern; the direct logit attribution, the
    attention conditioned on the next token and the mean ``z`` stay zero.
    """

    SUMS = ("dla", "n_next", "att_in", "att_out", "rows_in", "rows_out", "obs", "exp")  # per-story numpy arrays
    TENSORS = ("z_sum", "cell_s1", "cell_s2", "row_n")

    def __init__(self, model, store: StoryStore, n_stories: int, profile: np.ndarray | None = None,
                 output_effects: bool = True):
        cfg = model.cfg
        L, H, G, C = cfg.n_layers, cfg.n_heads, len(NEXT_GROUPS), len(KEY_CATEGORIES)
        self.model, self.store, self.L, self.H, self.output_effects = model, store, L, H, output_effects
        self.tables = _tables(store)
        self.key_tables = _category_tables(store)
        self.hook_names = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]
        if output_effects:
            self.U = unembed_directions(model).to(cfg.device)
            self.W_O = model.W_O.detach().float()  # [L, H, d_head, d_model]
            # W_O[h] @ U[:, v] for every head and vocabulary token, when it fits (<= 256 MB): the direct logit
            # attribution then gathers rows by next-token id instead of multiplying per position
            fits = L * H * cfg.d_head * cfg.d_vocab * 4 <= 256 * 2 ** 20
            self.OU = einsum(self.W_O, self.U, "l h e d, d v -> l v h e").contiguous() if fits else None
            # the final LayerNorm's scale, recomputed from the last residual (the pass then stops before the unembedding)
            self.ln = cfg.normalization_type if cfg.normalization_type in ("LN", "LNPre") else None
            self.hook_names += [f"blocks.{l}.attn.hook_z" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
        self.profile = None if profile is None else torch.as_tensor(profile, dtype=torch.float32, device=cfg.device)
        self.pred = None if profile is None else PredictedPatterns(self.profile)
        z = lambda *s: np.zeros(s)  # noqa: E731
        self.dla = z(n_stories, L * H, G)  # sum of direct logit attribution over tokens whose next is in group g
        self.n_next = z(n_stories, G)  # tokens per group
        self.att_in, self.att_out = z(n_stories, L * H, C), z(n_stories, L * H, C)  # mass on key cat c, rows next in/not in c
        self.rows_in, self.rows_out = z(n_stories, C), z(n_stories, C)
        self.obs, self.exp = z(n_stories, L * H, C), z(n_stories, L * H, C)  # lift: observed / profile-predicted mass
        self.z_sum = torch.zeros(L, H, cfg.d_head, dtype=torch.float64)
        self.z_n = 0.0
        N = cfg.n_ctx  # position-only surrogate: per-(q, k) sums of A and A^2 over stories, stories per row
        self.cell_s1 = torch.zeros(L, H, N, N, dtype=torch.float64)
        self.cell_s2 = torch.zeros(L, H, N, N, dtype=torch.float64)
        self.row_n = torch.zeros(N, dtype=torch.float64)

    def state_dict(self) -> dict[str, Tensor]:
        """Every accumulated sum (float64; per-story arrays keep their story axis; the count as a one-element tensor)."""
        out = {k: torch.from_numpy(getattr(self, k)) for k in self.SUMS}
        out.update({k: getattr(self, k) for k in self.TENSORS})
        out["z_n"] = torch.tensor([self.z_n], dtype=torch.float64)
        return out

    def merge_state(self, state: dict[str, Tensor]) -> None:
        """Add the :meth:`state_dict` of the same pass (same calibration) over other stories."""
        for k in self.SUMS:
            getattr(self, k)[...] += state[k].double().cpu().numpy()
        for k in self.TENSORS:
            getattr(self, k).add_(state[k].double().cpu())
        self.z_n += float(state["z_n"][0])

    def batch_hooks(self, batch: PassBatch) -> list:
        B, n = batch.tokens.shape
        dev = batch.tokens.device
        idx = batch.stories
        nxt = torch.as_tensor(next_groups(self.store, idx, n, batch.lengths, self.tables), device=dev)  # [B, n, G]
        keyc = torch.as_tensor(_key_categories(self.store, idx, n, self.key_tables), device=dev)  # [B, k, C]
        rm = batch.mask.float().clone()
        rm[:, 0] = 0.0  # query rows other than BOS
        valid = batch.mask.float()
        next_key = nxt[..., [_G[c] if c in _G else _G["NAME"] for c in KEY_CATEGORIES]] * rm[..., None]  # [B, q, C]
        self.n_next[idx] += nxt.sum(1).double().cpu().numpy()
        self.rows_in[idx] += next_key.sum(1).double().cpu().numpy()
        self.rows_out[idx] += (rm.sum(1)[:, None] - next_key.sum(1)).double().cpu().numpy()
        self.row_n[:n] += rm.sum(0).double().cpu()
        H = self.H

        def on_pattern(pattern: Tensor, hook) -> None:
            layer, pat = hook.layer(), pattern.float()
            mass = torch.matmul(pat, keyc[:, None])  # [B, H, q, C] mass each row puts on key category c
            tot = einsum(mass, rm, "b h q c, b q -> b h c")
            sl = slice(layer * H, (layer + 1) * H)
            if self.output_effects:
                ins = einsum(mass, next_key, "b h q c, b q c -> b h c")
                self.att_in[idx, sl] += ins.double().cpu().numpy()
                self.att_out[idx, sl] += (tot - ins).double().cpu().numpy()
            self.obs[idx, sl] += tot.double().cpu().numpy()
            # the pattern without the first key (a sink), renormalised; padding rows do not count
            scale = rm[:, None, :, None] / (1.0 - pat[..., :1]).clamp(min=1e-6)  # [B, H, q, 1]: one row factor
            rest = torch.mul(pat[..., 1:], scale, out=self._scratch(pat.shape[:-1] + (n - 1,)))  # [B, H, q, k-1]
            self.cell_s1[layer, :, :n, : n - 1] += rest.sum(0).double().cpu()
            self.cell_s2[layer, :, :n, : n - 1] += rest.square_().sum(0).double().cpu()
            if self.profile is not None:
                pred = self.pred(layer, n)  # [H, q, k]
                col = einsum(rm, pred, "b q, h q k -> b h k")
                self.exp[idx, sl] += einsum(col, keyc, "b h k, b k c -> b h c").double().cpu().numpy()

        hooks = [(lambda name: name.endswith("attn.hook_pattern"), on_pattern)]
        if not self.output_effects:
            return hooks
        self.z_n += float(valid.sum())
        next_ids = torch.cat([batch.tokens[:, 1:], torch.zeros_like(batch.tokens[:, :1])], 1)  # [B, n]
        u = next_ids if self.OU is not None else self.U[:, next_ids]  # the next token ids, or [d_model, B, n]
        zs: dict[int, Tensor] = {}

        def on_z(z: Tensor, hook) -> None:
            layer = hook.layer()
            zs[layer] = z.float()
            self.z_sum[layer] += einsum(z.float(), valid, "b p h e, b p -> h e").double().cpu()

        def on_resid(resid: Tensor, hook) -> None:
            scale = torch.ones(B, n, 1, device=dev)
            if self.ln is not None:  # what ln_final.hook_scale holds
                x = resid.float()
                x = x - x.mean(-1, keepdim=True)
                scale = (x.pow(2).mean(-1, keepdim=True) + self.model.cfg.eps).sqrt()
            self._dla(zs, scale, u, nxt, idx)

        return hooks + [(lambda name: name.endswith("attn.hook_z"), on_z), (f"blocks.{self.L - 1}.hook_resid_post", on_resid)]

    def _scratch(self, shape) -> Tensor:
        """A float32 tensor of ``shape`` over a buffer reused across layers and batches (a fresh pattern-sized
        tensor every time costs its page faults)."""
        size, dev = int(np.prod(shape)), self.model.cfg.device
        buf = getattr(self, "_buf", None)
        if buf is None or buf.numel() < size:
            self._buf = buf = torch.empty(size, device=dev)
        return buf[:size].view(shape)

    def _dla(self, zs: dict[int, Tensor], scale: Tensor, u: Tensor, nxt: Tensor, idx: np.ndarray) -> None:
        """Direct logit attribution of every head to the next token, summed per story and group (``u``: the next
        token ids ``[B, n]`` when :attr:`OU` is precomputed, else their directions ``[d_model, B, n]``)."""
        for layer, z in zs.items():
            if self.OU is not None:
                y = self.OU[layer][u]  # [B, n, H, d_head]: W_O[h] @ U[:, next] per position, gathered
            else:
                y = einsum(u, self.W_O[layer].to(z.device), "d b p, h e d -> b p h e")  # W_O[h] @ u per position
            dla = (y * z).sum(-1) / scale  # [B, n, H] (scale: [B, n, 1])
            g = einsum(dla, nxt, "b p h, b p g -> b h g")
            self.dla[idx, layer * self.H:(layer + 1) * self.H] += g.double().cpu().numpy()
        zs.clear()

    def position_r2(self) -> np.ndarray:
        """``[L, H]`` held-out R² of the position-only surrogate (NaN where rows are uniform).

        The surrogate predicts ``A[q, k]`` of a story by the head's mean pattern at ``(q, k)`` over
        the *other* stories (leave one out), so a head whose pattern depends on positions only
        scores 1 whatever its shape, and a head driven by content scores about 0. It is computed on
        the attention *not* spent on the first token (each row renormalised over keys ``1..q``):
        a sink is measured by ``bos_mass``, and the axis says how the head spends the rest.
        Baseline: the uniform row ``1 / q``; rows seen in fewer than 2 stories are skipped.
        """
        n = self.row_n  # [N] stories with query row q
        ok = (n >= 2).double()
        s1, s2 = self.cell_s1, self.cell_s2
        within = (s2 - s1.square() / n.clamp(min=1)[:, None]).sum(-1)  # [L, H, q]: sum over stories of (A - mean)^2
        loo = within * (n / (n - 1).clamp(min=1)).square()  # leave-one-out residuals of a mean
        q = torch.arange(len(n), dtype=torch.float64)
        tot = s2.sum(-1) - n / q.clamp(min=1)  # sum (A - 1/q)^2 over the row's keys 1..q (rows sum to 1)
        res, den = (loo * ok).sum(-1), (tot * ok).sum(-1)
        r2 = torch.where(den > 1e-6 * (s2.sum((-1, -2)) + 1e-30), 1.0 - res / den.clamp(min=1e-30),
                         torch.full_like(den, float("nan")))
        return r2.numpy()

    def mean_z(self) -> Tensor:
        """``[L, H, d_head]`` mean of each head's ``z`` over the tokens seen (for mean-ablation)."""
        return (self.z_sum / max(self.z_n, 1.0)).float()


