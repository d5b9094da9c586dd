"""Export a model to a Hugging Face ``transformers`` folder (GPT-2 or GPT-Neo architecture).

Our checkpoints are GPT-2 shaped: pre-LayerNorm blocks, learned positions, ``gelu_new``, biases
on q/k/v and everywhere else, attention scores divided by ``sqrt(d_head)`` (``use_attn_scale``;
GPT-2's ``scale_attn_weights``), every layer global. That is ``GPT2LMHeadModel`` exactly, so all-global
models export as GPT-2 (``tie_word_embeddings=false``: our unembedding is its own matrix).
Models with GPT-Neo local-attention layers export as ``GPTNeoForCausalLM`` (GPT-2 has no local
layers); GPT-Neo has no q/k/v biases and no score scaling, so the scale is folded into ``W_Q``,
the value bias into the output bias (attention rows sum to 1), the key bias is dropped (it adds
a constant to each query's scores, which softmax ignores) and a non-zero query bias is an error.

Neither architecture has an unembedding bias ``b_U``. It is folded exactly into the final
LayerNorm and ``lm_head``: the LayerNorm output is ``w * n + b`` with ``sum(n) = 0``, so adding
``u r^T`` (``u = 1/w``) to the unembedding adds ``(b . u) r`` to every position's logits and
nothing else; ``r`` is chosen to give ``b_U``. The logits are the same (checked at export), but
``lm_head.weight`` is not ``W_U`` itself; see docs/interop.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import einops
import torch
from torch import Tensor

from tinyinterp.atomic import umask
from tinyinterp.errors import CheckpointError
from tinyinterp.models.hf_import import TOKENIZER_FILES, is_hub_name
from tinyinterp.output_folder import check_output, write_output

log = logging.getLogger(__name__)

ARCHS = ("auto", "gpt2", "gpt-neo")
ACT_FNS = {"gelu_new": "gelu_new", "gelu": "gelu", "gelu_fast": "gelu_fast", "relu": "relu", "silu": "silu"}
CHECK_TOL = 1e-3  # export self-check (a wrong mapping is off by O(1); fp32 round-off is ~1e-5)


@dataclass
class ExportResult:
    out: Path
    arch: str  # "gpt2" or "gpt-neo"
    max_abs_diff: float | None  # logits of the written model vs the HookedTransformer (None: not checked)


def choose_arch(cfg, arch: str = "auto") -> str:
    """``gpt-neo`` when some layer uses local attention, else ``gpt2`` (or the one asked for, if it fits)."""
    if arch not in ARCHS:
        raise CheckpointError(f"--arch {arch}: choose one of {', '.join(ARCHS)}")
    local = bool(cfg.attn_types) and "local" in cfg.attn_types
    if arch == "auto":
        return "gpt-neo" if local else "gpt2"
    if arch == "gpt2" and local:
        raise CheckpointError(f"{cfg.model_name}: has local-attention layers, which GPT-2 lacks; export with --arch gpt-neo")
    return arch


def check_exportable(cfg) -> None:
    """One-line error for anything GPT-2/GPT-Neo cannot represent."""
    bad = []
    if cfg.normalization_type != "LN":
        bad.append(f"normalization_type={cfg.normalization_type!r} (needs 'LN')")
    if cfg.positional_embedding_type != "standard":
        bad.append(f"positional_embedding_type={cfg.positional_embedding_type!r} (needs 'standard')")
    if cfg.act_fn not in ACT_FNS:
        bad.append(f"act_fn={cfg.act_fn!r}")
    for flag in ("attn_only", "parallel_attn_mlp", "gated_mlp", "final_rms"):
        if getattr(cfg, flag, False):
            bad.append(f"{flag}=True")
    if cfg.n_heads * cfg.d_head != cfg.d_model:
        bad.append(f"n_heads*d_head={cfg.n_heads * cfg.d_head} != d_model={cfg.d_model}")
    if cfg.d_vocab_out != cfg.d_vocab:
        bad.append(f"d_vocab_out={cfg.d_vocab_out} != d_vocab={cfg.d_vocab}")
    if getattr(cfg, "n_key_value_heads", None) not in (None, cfg.n_heads):
        bad.append("grouped-query attention")
    if bad:
        raise CheckpointError(f"{cfg.model_name}: cannot be written as GPT-2/GPT-Neo: {'; '.join(bad)}")


def fold_unembed_bias(w: Tensor, b: Tensor, W_U: Tensor, b_U: Tensor) -> tuple[Tensor, Tensor]:
    """Final-LayerNorm bias and unembedding ``[D, V]`` that give ``b_U`` without a bias (exact; see module doc)."""
    if not torch.any(b_U != 0):
        return b, W_U
    w64, b64, W64, bU64 = (t.double() for t in (w, b, W_U, b_U))
    u = torch.where(w64 != 0, 1.0 / torch.where(w64 != 0, w64, 1.0), 0.0)
    if torch.any(w64 == 0):  # (w * n) . u = 0 for every n also when u lives on the zero-gain coordinates
        u = (w64 == 0).double()
    # Moving the bias by lam * e (e . u = 1) changes nothing the model computes once r compensates:
    # r = (b_U - lam * e @ W_U) / (b . u + lam). A small r keeps lm_head's entries (and so fp32
    # round-off) near W_U's; lam is picked from a grid, the shift kept below the LayerNorm output's norm.
    s = float(b64 @ u)
    e = u / float(u @ u)
    g = e @ W64
    bound = float(u.norm()) * w64.numel() ** 0.5
    best = None
    for lam in [0.0] + [sgn * 2.0 ** k for k in range(-2, 30) if 2.0 ** k <= bound for sgn in (1.0, -1.0)]:
        if abs(s + lam) < 1e-6:
            continue
        r = (bU64 - lam * g) / (s + lam)
        size = float(r.abs().max())
        if best is None or size < best[0] * 0.999:
            best = (size, lam, r)
    _, lam, r = best
    return (b64 + lam * e).to(b.dtype), (W64 + torch.outer(u, r)).to(W_U.dtype)


def _q_factor(cfg, layer: int, hf_scales: bool) -> float:
    """What ``W_Q``/``b_Q`` are multiplied by so the exported scores equal TransformerLens' ``q.k / attn_scale``."""
    ours = (float(cfg.attn_scale) if cfg.use_attn_scale else 1.0) * ((layer + 1) if cfg.scale_attn_by_inverse_layer_idx else 1)
    theirs = (cfg.d_head ** 0.5 if cfg.use_attn_scale else 1.0) * ((layer + 1) if cfg.scale_attn_by_inverse_layer_idx else 1)
    return theirs / ours if hf_scales else 1.0 / ours


def gpt2_state_dict(sd: dict[str, Tensor], cfg) -> dict[str, Tensor]:
    out = {"transformer.wte.weight": sd["embed.W_E"], "transformer.wpe.weight": sd["pos_embed.W_pos"]}
    for i in range(cfg.n_layers):
        p, h = f"blocks.{i}.", f"transformer.h.{i}."
        f = _q_factor(cfg, i, hf_scales=True)
        w = [einops.rearrange(sd[p + f"attn.W_{x}"], "h d e -> d (h e)") for x in "QKV"]
        bias = [sd[p + f"attn.b_{x}"].flatten() for x in "QKV"]
        w[0], bias[0] = w[0] * f, bias[0] * f
        out.update({
            h + "ln_1.weight": sd[p + "ln1.w"], h + "ln_1.bias": sd[p + "ln1.b"],
            h + "ln_2.weight": sd[p + "ln2.w"], h + "ln_2.bias": sd[p + "ln2.b"],
            h + "attn.c_attn.weight": torch.cat(w, dim=1), h + "attn.c_attn.bias": torch.cat(bias),
            h + "attn.c_proj.weight": einops.rearrange(sd[p + "attn.W_O"], "h e d -> (h e) d"),
            h + "attn.c_proj.bias": sd[p + "attn.b_O"],
            h + "mlp.c_fc.weight": sd[p + "mlp.W_in"], h + "mlp.c_fc.bias": sd[p + "mlp.b_in"],
            h + "mlp.c_proj.weight": sd[p + "mlp.W_out"], h + "mlp.c_proj.bias": sd[p + "mlp.b_out"],
        })
    return _final(out, sd)


def neo_state_dict(sd: dict[str, Tensor], cfg) -> dict[str, Tensor]:
    out = {"transformer.wte.weight": sd["embed.W_E"], "transformer.wpe.weight": sd["pos_embed.W_pos"]}
    for i in range(cfg.n_layers):
        p, h = f"blocks.{i}.", f"transformer.h.{i}."
        if torch.any(sd[p + "attn.b_Q"] != 0):
            raise CheckpointError(f"{cfg.model_name}: layer {i} has query biases (b_Q), which GPT-Neo lacks, and its local "
                                  "attention layers rule out GPT-2; train with all-global attention to export")
        if torch.any(sd[p + "attn.b_K"] != 0):
            log.info("layer %d: dropping the key bias b_K (it shifts each query's scores by a constant)", i)
        lin = lambda t: einops.rearrange(t, "h d e -> (h e) d")  # noqa: E731
        b_O = sd[p + "attn.b_O"] + torch.einsum("he,hed->d", sd[p + "attn.b_V"], sd[p + "attn.W_O"])
        a = h + "attn.attention."
        out.update({
            h + "ln_1.weight": sd[p + "ln1.w"], h + "ln_1.bias": sd[p + "ln1.b"],
            h + "ln_2.weight": sd[p + "ln2.w"], h + "ln_2.bias": sd[p + "ln2.b"],
            a + "q_proj.weight": lin(sd[p + "attn.W_Q"]) * _q_factor(cfg, i, hf_scales=False),
            a + "k_proj.weight": lin(sd[p + "attn.W_K"]), a + "v_proj.weight": lin(sd[p + "attn.W_V"]),
            a + "out_proj.weight": einops.rearrange(sd[p + "attn.W_O"], "h e d -> d (h e)"), a + "out_proj.bias": b_O,
            h + "mlp.c_fc.weight": sd[p + "mlp.W_in"].T, h + "mlp.c_fc.bias": sd[p + "mlp.b_in"],
            h + "mlp.c_proj.weight": sd[p + "mlp.W_out"].T, h + "mlp.c_proj.bias": sd[p + "mlp.b_out"],
        })
    return _final(out, sd)


def _final(out: dict[str, Tensor], sd: dict[str, Tensor]) -> dict[str, Tensor]:
    b, W_U = fold_unembed_bias(sd["ln_final.w"], sd["ln_final.b"], sd["unembed.W_U"], sd["unembed.b_U"])
    out.update({"transformer.ln_f.weight": sd["ln_final.w"], "transformer.ln_f.bias": b, "lm_head.weight": W_U.T})
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def hf_config(cfg, arch: str, tokenizer) -> dict[str, Any]:
    """``config.json`` fields (``transformers`` names) for ``arch``."""
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    common = {**ids, "vocab_size": cfg.d_vocab, "activation_function": ACT_FNS[cfg.act_fn],
              "layer_norm_epsilon": float(cfg.eps), "tie_word_embeddings": False}
    if arch == "gpt2":
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], **common, "n_positions": cfg.n_ctx,
                "n_embd": cfg.d_model, "n_layer": cfg.n_layers, "n_head": cfg.n_heads, "n_inner": cfg.d_mlp,
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": bool(cfg.use_attn_scale),
                "scale_attn_by_inverse_layer_idx": bool(cfg.scale_attn_by_inverse_layer_idx),
                "reorder_and_upcast_attn": False}
    types = list(cfg.attn_types) if cfg.attn_types else ["global"] * cfg.n_layers
    return {"model_type": "gpt_neo", "architectures": ["GPTNeoForCausalLM"], **common,
            "max_position_embeddings": cfg.n_ctx, "hidden_size": cfg.d_model, "num_layers": cfg.n_layers,
            "num_heads": cfg.n_heads, "intermediate_size": cfg.d_mlp, "attention_types": [[types, 1]],
            "window_size": int(cfg.window_size or 256), "resid_dropout": 0.0, "embed_dropout": 0.0,
            "attention_dropout": 0.0}


def build_hf_model(model, arch: str):
    """The ``transformers`` model (GPT-2 or GPT-Neo) equal to the ``HookedTransformer`` ``model``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = model.cfg
    check_exportable(cfg)
    if model.tokenizer is None:
        raise CheckpointError(f"{cfg.model_name}: the model has no tokenizer; load it with its tokenizer to export")
    fields = hf_config(cfg, arch, model.tokenizer)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    weights = gpt2_state_dict(sd, cfg) if arch == "gpt2" else neo_state_dict(sd, cfg)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.random.fork_rng():
        hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    params = {n for n, _ in hf.named_parameters()} | {"lm_head.weight"}
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k in params]
    if missing or unexpected:  # a mapping bug, not a user error
        raise RuntimeError(f"export mapping incomplete: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return hf.eval()


def _probe_tokens(cfg) -> Tensor:
    n = min(cfg.n_ctx, max(64, int(cfg.window_size or 0) + 16))
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, cfg.d_vocab, (2, n), generator=g)


def logits_diff(model, hf_dir: Path) -> float:
    """Max |logits| difference between ``model`` and the folder loaded with ``AutoModelForCausalLM``."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, local_files_only=True,
                                              trust_remote_code=False).eval()
    toks = _probe_tokens(model.cfg)
    with torch.no_grad():
        ours = model(toks.to(model.cfg.device)).float().cpu()
        theirs = hf(toks).logits.float()
    return float((ours - theirs).abs().max())


def _copy_tokenizer(model, src: str | os.PathLike, dest: Path) -> None:
    from tinyinterp.data.tokenizer import write_portable_config

    p = Path(src).expanduser()
    files = [p / f for f in TOKENIZER_FILES if not is_hub_name(src) and (p / f).is_file()]
    if files:
        for f in files:
            shutil.copyfile(f, dest / f.name)
    else:
        model.tokenizer.save_pretrained(str(dest))
        if model.tokenizer.__class__.__name__ in ("PreTrainedTokenizerFast", "TokenizersBackend"):
            write_portable_config(dest)


def _card(src: str, arch: str, cfg, diff: float | None) -> str:
    checked = f"max |logit difference| {diff:.2e} on random tokens at export" if diff is not None else "not checked"
    return (f"# {Path(str(src)).name or src} ({'GPT-2' if arch == 'gpt2' else 'GPT-Neo'} format)\n\n"
            f"Exported by `tinyinterp export-hf` from `{src}`: {cfg.n_layers} layer(s), d_model {cfg.d_model}, "
            f"{cfg.n_heads} heads, d_mlp {cfg.d_mlp}, context {cfg.n_ctx}, vocabulary {cfg.d_vocab}.\n\n"
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "model = AutoModelForCausalLM.from_pretrained(PATH)\ntokenizer = AutoTokenizer.from_pretrained(PATH)\n```\n\n"
            f"Logits equal the tinyinterp/TransformerLens model's ({checked}). The unembedding bias is folded "
            "into `lm_head.weight` (and, rarely, `transformer.ln_f.bias`); see tinyinterp's docs/interop.md.\n")


def export_hf(src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, arch: str = "auto",
              check: bool = True, verify: bool = True) -> ExportResult:
    """Write ``src`` (a checkpoint, HF folder or ``hf:NAME``) to ``out`` as a ``transformers`` model + tokenizer.

    ``out`` follows :mod:`tinyinterp.output_folder`: new, empty, or an earlier ``export-hf``
    output (replaced only with ``overwrite``, and only the files it wrote); a folder that holds
    the source or lies inside it is refused. The files are written into a staging folder and moved
    in when complete. With ``check`` the written folder is loaded back with
    ``AutoModelForCausalLM`` and its logits compared (error above 1e-3).
    """
    from tinyinterp.checkpoint import load_model

    out = Path(out).expanduser().absolute()
    inputs = [] if is_hub_name(src) else [src]
    check_output(out, "export-hf", inputs, overwrite, what="Hugging Face model")
    model = load_model(src, verify=verify)
    arch = choose_arch(model.cfg, arch)
    hf = build_hf_model(model, arch)
    with write_output(out, "export-hf", inputs, overwrite, what="Hugging Face model") as stage:
        with quiet_progress():
            hf.save_pretrained(str(stage), safe_serialization=True)
            del hf
            _copy_tokenizer(model, src, stage)
            diff = logits_diff(model, stage) if check else None
        if diff is not None and not diff <= CHECK_TOL:
            raise CheckpointError(f"{src}: the exported model's logits differ by {diff:.3g} (> {CHECK_TOL}); "
                                  "please report this with the checkpoint's config.json")
        (stage / "README.md").write_text(_card(str(src), arch, model.cfg, diff), encoding="utf-8")
        mode = 0o666 & ~umask()
        for f in stage.iterdir():  # transformers writes the weights 0600
            os.chmod(f, mode)
    log.debug("exported %s to %s as %s (max |logit diff| %s)", src, out, arch, diff)
    return ExportResult(out, arch, diff)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No transformers progress bars ("Writing model shards", "Loading weights") on the terminal."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


__all__ = ["ExportResult", "export_hf", "build_hf_model", "choose_arch", "fold_unembed_bias"]
