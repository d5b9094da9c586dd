"""Load Hugging Face models (GPT-Neo, GPT-2) as ``HookedTransformer``s.

Two kinds of model reference are handled here (``tinyinterp.load_model`` dispatches to them):

* a **local Hugging Face folder** (a hub snapshot, or what ``tinyinterp export-hf`` writes):
  ``config.json`` with ``model_type`` ``gpt_neo`` or ``gpt2``, weights in ``model.safetensors``
  (or a sharded ``model.safetensors.index.json``, or ``pytorch_model.bin`` read with
  ``torch.load(weights_only=True)``: nothing is unpickled beyond tensors), and a tokenizer.
  The ``HookedTransformerConfig`` is derived from ``config.json`` as TransformerLens does for
  these architectures (GPT-Neo: no attention scaling, local/global layers with ``window_size``),
  and the weights go through TransformerLens' own converters (``convert_neo_weights``,
  ``convert_gpt2_weights``). Nothing is folded or centred.
* ``hf:NAME`` (for example ``hf:roneneldan/TinyStories-33M``): TransformerLens' official
  support, ``HookedTransformer.from_pretrained_no_processing`` (it fixes ``n_ctx`` to 512 for
  the TinyStories models and uses the GPT-Neo tokenizer). Needs the network; offline it is a
  one-line error that says to download the snapshot and pass its folder.

A GPT-Neo folder whose path mentions ``TinyStories`` (a hub snapshot of the official models)
gets ``n_ctx = 512`` like the ``hf:`` route: the models were trained on 512 tokens although
their config says 2048.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tinyinterp.errors import CheckpointError
from tinyinterp.safe_files import member, read_json

log = logging.getLogger(__name__)

HUB_PREFIX = "hf:"
CONFIG = "config.json"
SUPPORTED = ("gpt_neo", "gpt2")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "added_tokens.json", "tokenizer.model")
TINYSTORIES_CTX = 512
MAX_CONFIG_BYTES = 1 << 20
# buffers that old checkpoints saved alongside the weights (causal masks), ignored on load
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias")


def is_hub_name(ref: str | os.PathLike) -> bool:
    return isinstance(ref, str) and ref.startswith(HUB_PREFIX)


def read_hf_config(path: Path) -> dict[str, Any] | None:
    """``config.json`` of ``path`` when it is a Hugging Face model folder (has ``model_type``), else None."""
    cp = path / CONFIG
    if not (path.is_dir() and cp.is_file()):
        return None
    try:
        cfg = read_json(member(path, CONFIG, CheckpointError), CheckpointError, max_bytes=MAX_CONFIG_BYTES)
    except (OSError, CheckpointError):
        return None  # the tinyinterp loader reports unreadable configs
    return cfg if isinstance(cfg, dict) and "model_type" in cfg else None


def is_hf_dir(path: str | os.PathLike) -> bool:
    return not is_hub_name(path) and read_hf_config(Path(path).expanduser()) is not None


def hooked_config_from_hf(hf: dict[str, Any], where: Path, n_ctx: int | None = None) -> dict[str, Any]:
    """``HookedTransformerConfig`` fields for a GPT-Neo or GPT-2 ``config.json`` (as TransformerLens derives them)."""
    mt = hf.get("model_type")
    if mt not in SUPPORTED:
        raise CheckpointError(f"{where / CONFIG}: model_type {mt!r} is not supported (only {', '.join(SUPPORTED)}); "
                              "load it with TransformerLens directly or convert it to GPT-2/GPT-Neo")
    try:
        c = transformers_config(hf)
        if mt == "gpt_neo":
            d = c.hidden_size
            cfg = {"d_model": d, "d_head": d // c.num_heads, "n_heads": c.num_heads,
                   "d_mlp": c.intermediate_size or 4 * d, "n_layers": c.num_layers,
                   "n_ctx": c.max_position_embeddings, "eps": c.layer_norm_epsilon, "d_vocab": c.vocab_size,
                   "attn_types": list(c.attention_layers), "act_fn": c.activation_function,
                   "use_attn_scale": False, "use_local_attn": True, "window_size": c.window_size,
                   "scale_attn_by_inverse_layer_idx": False, "original_architecture": "GPTNeoForCausalLM"}
            if d % c.num_heads:
                raise ValueError(f"hidden_size {d} is not a multiple of num_heads {c.num_heads}")
        else:
            if getattr(c, "add_cross_attention", False):
                raise ValueError("add_cross_attention=true (an encoder-decoder block) is not a causal LM")
            d = c.n_embd
            cfg = {"d_model": d, "d_head": d // c.n_head, "n_heads": c.n_head, "d_mlp": c.n_inner or 4 * d,
                   "n_layers": c.n_layer, "n_ctx": c.n_positions, "eps": c.layer_norm_epsilon,
                   "d_vocab": c.vocab_size, "act_fn": c.activation_function,
                   "use_attn_scale": bool(c.scale_attn_weights), "use_local_attn": False,
                   "scale_attn_by_inverse_layer_idx": bool(c.scale_attn_by_inverse_layer_idx),
                   "original_architecture": "GPT2LMHeadModel"}
            if d % c.n_head:
                raise ValueError(f"n_embd {d} is not a multiple of n_head {c.n_head}")
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise CheckpointError(f"{where / CONFIG}: invalid {mt} config ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                              "restore the file from the original model") from None
    if n_ctx is None and mt == "gpt_neo" and "TinyStories" in str(where.resolve()):
        n_ctx = TINYSTORIES_CTX
    if n_ctx is not None:
        cfg["n_ctx"] = min(int(n_ctx), cfg["n_ctx"])
    cfg.update({"normalization_type": "LN", "positional_embedding_type": "standard", "default_prepend_bos": True,
                "model_name": display_name(where)})
    return cfg


def transformers_config(hf: dict[str, Any]):
    """The ``transformers`` config object of a ``config.json`` dict."""
    from transformers import AutoConfig

    return AutoConfig.for_model(hf["model_type"], **{k: v for k, v in hf.items() if k != "model_type"})


def display_name(path: Path) -> str:
    """``owner/name`` for a hub-cache snapshot (``models--owner--name/snapshots/<sha>``), else the folder name."""
    for part in reversed(path.resolve().parts):
        if part.startswith("models--"):
            return part[len("models--"):].replace("--", "/")
    return path.resolve().name


def _weights_file(path: Path) -> Path:
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if os.path.lexists(path / name):
            return member(path, name, CheckpointError, "weights file")
    raise CheckpointError(f"{path}: no weights (model.safetensors or pytorch_model.bin); download the complete snapshot")


def read_hf_weights(path: Path) -> dict[str, Tensor]:
    """The Hugging Face state dict of a folder: safetensors (single or sharded) or a tensors-only ``.bin``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    wf = _weights_file(path)
    try:
        if wf.name.endswith(".bin"):
            sd = torch.load(wf, map_location="cpu", weights_only=True)
        elif wf.name.endswith(".index.json"):
            sd = {k: v for s in _index_shards(wf) for k, v in load_file(str(s)).items()}
        else:
            sd = load_file(str(wf))
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        msg = _first_line(exc)
        raise CheckpointError(f"{wf}: unreadable weights ({msg}); re-download it (.bin files load tensors only, "
                              "never arbitrary pickles)") from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{wf}: not a state dict of tensors; re-download it")
    return sd


def _index_shards(index: Path) -> list[Path]:
    """The shard files a ``model.safetensors.index.json`` names: regular files inside its folder."""
    fix = "re-download the model's index file"
    data = read_json(index, CheckpointError, fix, max_bytes=MAX_CONFIG_BYTES)
    wm = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wm, dict) or not wm or not all(isinstance(v, str) for v in wm.values()):
        raise CheckpointError(f"{index}: no weight_map of tensor name -> shard file; {fix}")
    return [member(index.parent, name, CheckpointError, "weight_map shard") for name in sorted(set(wm.values()))]


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _hf_model(path: Path, hf_cfg: dict[str, Any], sd: dict[str, Tensor]):
    """A transformers model of ``path``'s architecture holding ``sd`` (fp32)."""
    from transformers import AutoModelForCausalLM

    config = transformers_config(hf_cfg)
    with torch.random.fork_rng():  # random init is overwritten; do not disturb the caller's RNG
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if not any(k.startswith("transformer.") for k in sd):  # a base model (GPT2Model) saved without the prefix
        sd = {f"transformer.{k}": v for k, v in sd.items()}
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items() if not k.endswith(_IGNORED_SUFFIXES)}
    params = {n for n, _ in model.named_parameters()}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatch
        line = next((s.strip() for s in str(exc).splitlines() if "size mismatch" in s), str(exc).splitlines()[0])
        raise CheckpointError(f"{path}: weights do not match {CONFIG} ({line[:200]}); the config and weights come from different models") from None
    tied = "lm_head.weight" if config.tie_word_embeddings else None
    missing = [k for k in missing if k in params and k != tied]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match {CONFIG} (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                              "the config and weights come from different models")
    if tied and "lm_head.weight" not in sd:
        model.tie_weights()
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise CheckpointError(f"{path}: {name} contains NaN or inf; the weights are broken")
    return model.eval()


def hooked_state_dict(hf_model, cfg) -> dict[str, Tensor]:
    """TransformerLens' own conversion of a GPT-Neo / GPT-2 transformers model."""
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformer_lens.pretrained.weight_conversions.neo import convert_neo_weights

    convert = convert_neo_weights if cfg.original_architecture == "GPTNeoForCausalLM" else convert_gpt2_weights
    with torch.no_grad():
        sd = {k: v.detach().clone() for k, v in convert(hf_model, cfg).items()}
    sd.setdefault("unembed.b_U", torch.zeros(cfg.d_vocab_out))
    return sd


def load_tokenizer_checked(path: Path, d_vocab: int):
    """The folder's tokenizer; it may have fewer ids than the model (padded vocabularies), never more."""
    from tinyinterp.data.tokenizer import load_tokenizer

    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer.model")):
        raise CheckpointError(f"{path}: no tokenizer files (tokenizer.json, or vocab.json + merges.txt); copy the "
                              "tokenizer into this folder or pass with_tokenizer=False")
    try:
        tok = load_tokenizer(path)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: tokenizer unreadable ({str(exc).splitlines()[0][:160]}); copy the model's tokenizer files into it") from None
    if len(tok) > d_vocab:
        raise CheckpointError(f"{path}: tokenizer has {len(tok)} ids but {CONFIG} says vocab_size={d_vocab}; use the tokenizer the model was trained with")
    return tok


def load_hf_dir(path: str | os.PathLike, device: str | torch.device = "cpu", with_tokenizer: bool = True,
                n_ctx: int | None = None):
    """Load a local GPT-Neo / GPT-2 Hugging Face folder as a ``HookedTransformer`` (fp32, eval mode)."""
    from transformer_lens import HookedTransformer

    from tinyinterp.models.hooked import check_weights, hooked_config, model_config

    p = Path(path).expanduser()
    hf_cfg = read_hf_config(p)
    if hf_cfg is None:
        raise CheckpointError(f"{p}: not a Hugging Face model folder (no {CONFIG} with model_type)")
    mc = model_config(hooked_config_from_hf(hf_cfg, p, n_ctx), p / CONFIG)
    mc.check_fits_memory(str(p / CONFIG))
    cfg = hooked_config(mc, p / CONFIG)
    tokenizer = load_tokenizer_checked(p, cfg.d_vocab) if with_tokenizer else None
    hf_model = _hf_model(p, hf_cfg, read_hf_weights(p))
    sd = hooked_state_dict(hf_model, cfg)
    del hf_model
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    params = {n for n, _ in model.named_parameters()}
    sd.update({k: v for k, v in model.state_dict().items() if k not in params})  # masks, IGNORE
    check_weights(sd, model.state_dict(), p, params)
    model.load_state_dict(sd, strict=True)
    if str(device) != "cpu":
        model.to(device, print_details=False)
    log.info("loaded %s (%s, %d layers) from %s", cfg.model_name, hf_cfg["model_type"], cfg.n_layers, p)
    return model.eval()


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _offline_error(name: str) -> CheckpointError:
    return CheckpointError(
        f"hf:{name}: a hub name needs the network but Hugging Face is offline (HF_HUB_OFFLINE); on a machine with "
        f"network run `hf download {name}`, copy the snapshot folder it prints here and pass that folder instead")


def load_hub_model(ref: str, device: str | torch.device = "cpu", with_tokenizer: bool = True):
    """``hf:NAME`` through TransformerLens' official support (no folding or centring)."""
    from transformer_lens import HookedTransformer

    name = ref[len(HUB_PREFIX):].strip()
    if not name:
        raise CheckpointError(f"{ref!r}: empty hub name; write hf:OWNER/NAME, e.g. hf:roneneldan/TinyStories-33M")
    if _offline():
        raise _offline_error(name)
    buf = io.StringIO()  # TransformerLens prints "Loaded pretrained model …": keep it off stdout
    try:
        with contextlib.redirect_stdout(buf):
            model = HookedTransformer.from_pretrained_no_processing(name, device=str(device))
    except Exception as exc:  # noqa: BLE001 - unknown name, no network, …: one line
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(f"hf:{name}: TransformerLens cannot load it ({type(exc).__name__}: {msg}); check the name "
                              "and the network, or download the snapshot and pass its folder") from None
    if buf.getvalue().strip():
        log.info(buf.getvalue().strip())
    if not with_tokenizer:
        model.tokenizer = None
    return model.eval()


def snapshot_dir(ref: str) -> Path:
    """The local folder of ``hf:NAME`` (downloaded when online): for code that needs a folder, like the explorer."""
    name = ref[len(HUB_PREFIX):].strip()
    if _offline():
        raise _offline_error(name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.bin"]))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"hf:{name}: download failed ({str(exc).splitlines()[0][:160]}); download the snapshot "
                              "and pass its folder") from None


def fast_config(cfg) -> dict[str, Any]:
    """Config dict for :class:`TinyTransformer` from a loaded model's ``HookedTransformerConfig``."""
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
        raise CheckpointError(f"{cfg.model_name}: scale_attn_by_inverse_layer_idx is not supported by the fast model; "
                              "use tinyinterp.load_model (HookedTransformer) instead")
    keys = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "d_vocab_out", "act_fn", "eps",
            "use_attn_scale", "attn_types", "window_size", "normalization_type", "positional_embedding_type")
    out = {k: getattr(cfg, k) for k in keys}
    if out["use_attn_scale"] and abs(float(cfg.attn_scale) - out["d_head"] ** 0.5) > 1e-6:
        raise CheckpointError(f"{cfg.model_name}: attn_scale={cfg.attn_scale} is not sqrt(d_head); the fast model cannot run it")
    return out
