"""Train a sparse autoencoder on one hook of a checkpoint with SAELens' training runner.

Everything SAELens would fetch from the hub is injected instead: the ``HookedTransformer``
(``override_model``) and a pre-tokenised in-memory ``datasets.Dataset`` of token windows
from our readers (``override_dataset``). SAELens then does what it is good at: the
activation store and shuffling buffer, the SAE classes (TopK / BatchTopK with the aux-k
loss), the trainer (Adam, warm-up and linear decay), checkpoints, and its on-disk format
(``cfg.json`` + ``sae_weights.safetensors``), so ``sae_lens.SAE.load_from_disk`` reads our
output directly.

A rerun with the same config, data and model is free (the finished SAE is kept); an
interrupted run resumes from its last checkpoint in ``.<out>.resume/`` beside the output.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tinyinterp.atomic import replace_dir
from tinyinterp.errors import ConfigError
from tinyinterp.sae.config import SAETrainConfig
from tinyinterp.sae.data import given_windows, token_windows

log = logging.getLogger(__name__)

RESUME_REQUEST = "request.json"


def runner_config(cfg: SAETrainConfig, d_in: int, context_size: int, model_name: str, device: str = "cpu"):
    """The SAELens ``LanguageModelSAERunnerConfig`` for ``cfg`` (offline: no wandb, no hub dataset)."""
    from sae_lens import BatchTopKTrainingSAEConfig, LanguageModelSAERunnerConfig, LoggingConfig, TopKTrainingSAEConfig

    sae_cls = BatchTopKTrainingSAEConfig if cfg.architecture == "batchtopk" else TopKTrainingSAEConfig
    k = float(cfg.k) if cfg.architecture == "batchtopk" else int(cfg.k)
    sae_cfg = sae_cls(d_in=d_in, d_sae=cfg.d_sae, k=k, aux_loss_coefficient=cfg.aux_loss_coefficient,
                      device=device, dtype="float32")
    steps = cfg.steps
    return LanguageModelSAERunnerConfig(
        sae=sae_cfg, model_name=model_name, hook_name=cfg.hook, dataset_path="", is_dataset_tokenized=True,
        streaming=False, context_size=context_size, prepend_bos=False, training_tokens=cfg.training_tokens,
        train_batch_size_tokens=cfg.batch_size, store_batch_size_prompts=cfg.store_batch_windows,
        n_batches_in_buffer=-(-cfg.buffer_tokens // context_size), lr=cfg.lr, lr_scheduler_name="constant",
        lr_warm_up_steps=min(cfg.lr_warm_up_steps, max(0, steps - 1)),
        lr_decay_steps=int(cfg.lr_decay_fraction * steps),
        dead_feature_window=max(1, min(100, steps // 4)), feature_sampling_window=max(1, min(200, steps // 2)),
        device=device, seed=cfg.seed, logger=LoggingConfig(log_to_wandb=False), n_checkpoints=cfg.checkpoints,
        checkpoint_path=None, output_path=None, verbose=False, exclude_special_tokens=False,
        n_batches_for_norm_estimate=1,
    )


def _fingerprint(cfg: SAETrainConfig, model_info: dict, data_sources: list[dict]) -> dict:
    return {"config": cfg.to_json(), "model": model_info, "data": [(s["path"], s["sha256"]) for s in data_sources]}


def _load(checkpoint) -> tuple[Any, dict]:
    """(HookedTransformer, model provenance) from a checkpoint folder or a loaded model."""
    from tinyinterp.checkpoint import load_model, sha256_file

    if isinstance(checkpoint, (str, os.PathLike)):
        model = load_model(checkpoint)
        weights = Path(checkpoint) / "model.safetensors"
        info = {"checkpoint": str(checkpoint), "model_name": model.cfg.model_name,
                "weights_sha256": sha256_file(weights) if weights.exists() else None}
        return model, info
    return checkpoint, {"checkpoint": None, "model_name": checkpoint.cfg.model_name, "weights_sha256": None}


def hook_dim(model, hook: str) -> int:
    """Width of ``hook``'s activations on ``model`` (one-line error for a hook the model lacks)."""
    if hook not in model.hook_dict:
        raise ConfigError(f"hook {hook!r}: {model.cfg.model_name} has no such hook (it has {model.cfg.n_layers} "
                          f"layer(s): blocks.0 … blocks.{model.cfg.n_layers - 1})")
    return model.cfg.d_mlp if ".mlp.hook_" in hook else model.cfg.d_model


def train_sae(checkpoint, config: SAETrainConfig | None = None, out: str | os.PathLike | None = None,
              force: bool = False, command: str | None = None, tokens: Tensor | None = None, **overrides):
    """Train an SAE on ``config.hook`` of ``checkpoint`` (a folder or a loaded ``HookedTransformer``).

    The activations come from ``config.data`` (stories, tokenised with the model's tokenizer), or
    from ``tokens``, an int ``[n, context]`` tensor of token windows you prepared yourself.

    Returns the trained ``sae_lens`` SAE (inference form: TopK, or JumpReLU for BatchTopK).
    With ``out`` the SAE is saved there in SAELens' format with a card; a rerun with the same
    config, data and model loads it instead of training again (``force=True`` retrains).
    ``overrides`` replace config fields, e.g. ``train_sae("checkpoints/ts-1l", data=[...], d_sae=2048)``.
    """
    from tinyinterp.sae.load import load_sae

    cfg = SAETrainConfig(**{**(config.to_json() if config else {}), **overrides})
    if not cfg.data and tokens is None:
        raise ConfigError("data: no training stories given; pass files, folders, globs or hf:NAME (or tokens=...)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, model_info = _load(checkpoint)
    d_in = hook_dim(model, cfg.hook)
    context = cfg.context_size or model.cfg.n_ctx
    if context > model.cfg.n_ctx:
        raise ConfigError(f"context_size={context}: longer than the model's n_ctx={model.cfg.n_ctx}")
    windows = (token_windows(model.tokenizer, cfg.data, context, cfg.max_stories, shuffle_seed=cfg.seed)
               if tokens is None else given_windows(tokens, context, model.cfg.d_vocab))
    fingerprint = _fingerprint(cfg, model_info, windows.sources)
    out = Path(out) if out is not None else None
    if out is not None and not force and _finished(out, fingerprint):
        log.info("%s: already trained with this config, data and model; loading it (force=True retrains)", out)
        return load_sae(out, model=model)
    t0 = time.perf_counter()
    sae, n_resumed = _run(model, cfg, d_in, context, windows, out, fingerprint)
    seconds = time.perf_counter() - t0
    training = {"seconds": round(seconds, 1), "resumed_at_tokens": n_resumed, "threads": torch.get_num_threads(),
                "load_average_1min_at_end": round(os.getloadavg()[0], 2), "command": command,
                "data": windows.provenance(), "model": model_info, "fingerprint": fingerprint}
    sae.cfg.metadata.tinyinterp = training
    if out is not None:
        save_sae(sae, out)
    return sae


def _finished(out: Path, fingerprint: dict) -> bool:
    cfg_file = out / "cfg.json"
    if not cfg_file.exists():
        return False
    try:
        meta = json.loads(cfg_file.read_text()).get("metadata", {}).get("tinyinterp", {})
    except (json.JSONDecodeError, AttributeError):
        return False
    return json.loads(json.dumps(fingerprint)) == meta.get("fingerprint")


def _resume_point(resume_dir: Path, fingerprint: dict) -> Path | None:
    req = resume_dir / RESUME_REQUEST
    try:
        same = json.loads(req.read_text()) == json.loads(json.dumps(fingerprint))
    except (OSError, json.JSONDecodeError):
        same = False
    if not same:
        shutil.rmtree(resume_dir, ignore_errors=True)
        resume_dir.mkdir(parents=True)
        req.write_text(json.dumps(fingerprint))
        return None
    done = [p for p in resume_dir.iterdir() if p.is_dir() and p.name.isdigit() and (p / "trainer_state.pt").exists()]
    return max(done, key=lambda p: int(p.name)) if done else None


def _run(model, cfg: SAETrainConfig, d_in: int, context: int, windows, out: Path | None, fingerprint: dict):
    import datasets
    from sae_lens import LanguageModelSAETrainingRunner
    from sae_lens.training._interruption import InterruptedException

    rcfg = runner_config(cfg, d_in, context, model.cfg.model_name)
    resume_dir = out.with_name(f".{out.name}.resume") if out is not None and cfg.checkpoints else None
    start = _resume_point(resume_dir, fingerprint) if resume_dir is not None else None
    rcfg.checkpoint_path = str(resume_dir) if resume_dir is not None else None
    rcfg.resume_from_checkpoint = str(start) if start is not None else None
    if start is not None:
        log.info("resuming from %s (%s activations done)", start, start.name)
    dataset = datasets.Dataset.from_dict({"tokens": windows.tokens.numpy()})
    torch.manual_seed(cfg.seed)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner = LanguageModelSAETrainingRunner(rcfg, override_dataset=dataset, override_model=model)
        training_sae = runner.run()
    except InterruptedException:
        raise KeyboardInterrupt from None
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    sae = _to_inference(training_sae)
    if resume_dir is not None:
        shutil.rmtree(resume_dir, ignore_errors=True)
    return sae, int(start.name) if start is not None else 0


def _to_inference(training_sae):
    """The inference SAE SAELens would save (TopK stays TopK; BatchTopK becomes JumpReLU)."""
    import tempfile

    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_inference_model(tmp)
        cfg = json.loads((Path(tmp) / "cfg.json").read_text())
        with warnings.catch_warnings():  # SAELens' advice to use HookedSAETransformer does not apply here
            warnings.filterwarnings("ignore", message=".*model_from_pretrained_kwargs")
            sae = SAE.load_from_disk(tmp)
    sae.cfg.metadata = type(sae.cfg.metadata)(**cfg.get("metadata", {}))
    return sae.eval()


def save_sae(sae, out: str | os.PathLike, weights_dtype: torch.dtype = torch.float32) -> Path:
    """Write ``sae`` to ``out`` in SAELens' format (all files or none).

    ``weights_dtype=torch.float16`` halves the file; ``cfg.json`` keeps ``dtype: float32`` so
    ``SAE.load_from_disk`` returns a float32 SAE either way.
    """
    from safetensors.torch import save_file

    from tinyinterp.sae.card import render_card

    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sae.save_model(tmp)
    sd = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in sae.state_dict().items()}
    save_file(sd, tmp / "sae_weights.safetensors")
    (tmp / "README.md").write_text(render_card(out.name, json.loads((tmp / "cfg.json").read_text())))
    replace_dir(tmp, out)
    return out
