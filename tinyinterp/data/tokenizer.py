"""Byte-level BPE tokenizer: train, save, load, hash, and bytes-per-token for bits per byte.

A trained tokenizer is saved as a folder that both ``PreTrainedTokenizerFast.from_pretrained``
and ``HookedTransformer(cfg, tokenizer=...)`` accept. ``<|endoftext|>`` (id 0) is BOS, EOS,
PAD and UNK, as in the TinyStories/GPT-Neo convention. Any existing Hugging Face tokenizer
folder (for example GPT-Neo's, used by the official TinyStories models) can be used instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tinyinterp.atomic import write_text
from tinyinterp.errors import DataError
from tinyinterp.output_folder import check_complete, check_output, every_file, write_output
from tinyinterp.safe_files import member, read_bytes, read_json

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def train_bpe(
    stories: Iterable[str],
    out_dir: str | os.PathLike,
    vocab_size: int = 4096,
    min_frequency: int = 2,
    corpus_name: str = "corpus",
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    cache: bool = False,
) -> Path:
    """Train a byte-level BPE on ``stories`` and save it (atomically) to ``out_dir``.

    ``corpus_name`` (the source paths) names the corpus in the error raised when it holds no story.
    ``out_dir`` follows :mod:`tinyinterp.output_folder`: it must be new, empty or an earlier
    tokenizer output (replaced only with ``overwrite``), and must not hold or lie inside one of
    ``inputs`` (the corpus files); ``cache``: ``out_dir`` is a cache entry, all of it replaceable.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257 or vocab_size > 65535:
        raise DataError(f"vocab_size={vocab_size}: must be between 257 (bytes + <|endoftext|>) and 65535 (uint16 shards)")
    out_dir = Path(out_dir).expanduser()
    legacy, overwrite = (every_file, True) if cache else (None, overwrite)
    check_output(out_dir, "tokenizer", inputs, overwrite, legacy, what="tokenizer")  # before the slow part
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    n = 0

    def counted():
        nonlocal n
        for s in stories:
            n += 1
            yield s

    tok.train_from_iterator(counted(), trainer=trainer)
    if n == 0:
        raise DataError(f"{corpus_name}: no stories to train a tokenizer on (the corpus is empty or whitespace only); "
                        "pass --data files that hold text")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT, unk_token=EOT,
        model_max_length=1_000_000,
    )
    with write_output(out_dir, "tokenizer", inputs, overwrite, legacy, what="tokenizer") as stage:
        fast.save_pretrained(stage)
        write_portable_config(stage)
    log.info("trained BPE tokenizer with %d ids on %d stories -> %s", tok.get_vocab_size(), n, out_dir)
    return out_dir


def write_portable_config(folder: Path) -> None:
    """Name the class every transformers release knows (v5 writes ``TokenizersBackend``)."""
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("backend", None)
    write_text(cfg_path, json.dumps(cfg, indent=2) + "\n")


# what AutoTokenizer may read from a tokenizer folder (and config.json, for the tokenizer class)
READ_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
              "added_tokens.json", "tokenizer.model", "config.json")
MAX_TOKENIZER_BYTES = 256 << 20


def load_tokenizer(path: str | os.PathLike):
    """Load a tokenizer folder as ``PreTrainedTokenizerFast`` with a clear error if unusable.

    Only regular files inside the folder are read (size-capped), and a tokenizer that asks to
    run the folder's own Python code (``auto_map``) is refused: ``trust_remote_code`` is never set.
    """
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: tokenizer folder not found (expected tokenizer.json / tokenizer_config.json)")
    check_complete(p, "tokenizer")
    for name in READ_FILES:
        f = member(p, name, DataError, "tokenizer file")
        if f.exists() and f.stat().st_size > MAX_TOKENIZER_BYTES:
            raise DataError(f"{f}: {f.stat().st_size:,} bytes is larger than a tokenizer file may be "
                            f"({MAX_TOKENIZER_BYTES:,}); restore the original file")
    if not any((p / f).exists() for f in ("tokenizer.json", "vocab.json", "tokenizer.model")):
        raise DataError(f"{p}: no tokenizer files (tokenizer.json or vocab.json+merges.txt); copy the tokenizer into this folder")
    _refuse_remote_code(p)
    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{p}: cannot load tokenizer ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if tok.bos_token is None:
        tok.bos_token = EOT if EOT in tok.get_vocab() else tok.eos_token
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.bos_token
    return tok


def _refuse_remote_code(folder: Path) -> None:
    """One line for a tokenizer (or model config) that names its own code through ``auto_map``."""
    for name in ("tokenizer_config.json", "config.json"):
        f = folder / name
        if not f.exists():
            continue
        cfg = read_json(f, DataError, "restore the original file")
        if isinstance(cfg, dict) and "auto_map" in cfg:
            raise DataError(f"{f}: asks to run Python code shipped with the folder (auto_map); tinyinterp never runs "
                            "a model folder's code; remove auto_map or use a standard tokenizer")


def check_tokenizer_fits(tok, d_vocab: int, where: str | os.PathLike) -> None:
    """Every token id of ``tok`` must be an embedding row: ids >= ``d_vocab`` would crash later."""
    vocab = tok.get_vocab()
    top = max(vocab.values(), default=-1)
    if top >= d_vocab:
        token = next(t for t, i in vocab.items() if i == top)
        raise DataError(f"{where}: the tokenizer has token id {top} ({token!r}) but the model has d_vocab={d_vocab} "
                        "embedding rows; use the tokenizer the model was trained with")


def tokenizer_sha256(path: str | os.PathLike) -> str:
    """Hash of the tokenizer's defining files (vocabulary, merges, special tokens)."""
    p = Path(path)
    h = hashlib.sha256()
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        f = member(p, name, DataError, "tokenizer file")
        if f.exists():
            h.update(name.encode())
            h.update(read_bytes(f, MAX_TOKENIZER_BYTES, DataError))
    return h.hexdigest()


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 byte length of each token id (special tokens count 0), for bits per byte.

    Byte-level BPE tokens map to exact byte strings, so summing this table over a token
    sequence gives the byte length of its text (separators excluded).
    """
    vocab = tokenizer.get_vocab()
    n = max(len(tokenizer), max(vocab.values()) + 1)
    out = np.zeros(n, dtype=np.int64)
    special = set(tokenizer.all_special_ids)
    byte_decoder = _byte_decoder()
    for token, idx in vocab.items():
        if idx in special:
            continue
        if all(ch in byte_decoder for ch in token):
            out[idx] = len(token)  # byte-level alphabet: one char = one byte
        else:  # non-byte-level tokenizers: decode
            out[idx] = len(tokenizer.convert_tokens_to_string([token]).encode("utf-8"))
    return out


def _byte_decoder() -> dict[str, int]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def encode_stories(tokenizer, stories: list[str]) -> list[list[int]]:
    """Encode a batch of stories without special tokens (the caller adds ``<|endoftext|>``)."""
    return tokenizer(stories, add_special_tokens=False)["input_ids"]


def describe(path: str | os.PathLike) -> dict:
    tok = load_tokenizer(path)
    return {"path": str(path), "vocab_size": len(tok), "sha256": tokenizer_sha256(path), "bos": tok.bos_token}


# a model's own files, found when a checkpoint folder is used as the tokenizer folder: never copied
NOT_TOKENIZER_FILES = {"config.json", "generation_config.json", "training.json", "manifest.json"}


def tokenizer_files(tokenizer_dir: str | os.PathLike) -> list[Path]:
    """The files of a tokenizer folder that a checkpoint needs (``.json``, ``.txt``, ``.model``)."""
    return [f for f in sorted(Path(tokenizer_dir).iterdir())
            if f.is_file() and f.suffix in (".json", ".txt", ".model") and f.name not in NOT_TOKENIZER_FILES
            and not f.name.startswith(".")]


def save_tokenizer(tokenizer_dir: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy a tokenizer folder's files into ``dest`` (each file atomically)."""
    from tinyinterp.atomic import atomic_path

    for f in tokenizer_files(tokenizer_dir):
        with atomic_path(Path(dest) / f.name) as tmp:
            shutil.copyfile(f, tmp)
