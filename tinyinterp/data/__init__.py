"""Corpus readers, normalisation, tokenizer training and pre-tokenised token shards."""

from tinyinterp.data.readers import Source, iter_stories, load_stories, resolve_sources
from tinyinterp.data.tokenizer import load_tokenizer, token_byte_lengths, tokenizer_sha256, train_bpe

__all__ = [
    "Source", "iter_stories", "load_stories", "resolve_sources",
    "load_tokenizer", "token_byte_lengths", "tokenizer_sha256", "train_bpe",
]
