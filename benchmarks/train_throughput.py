"""Training throughput: tinyinterp trainer vs plain HookedTransformer vs minimal PyTorch SDPA.

    python benchmarks/train_throughput.py [--steps 6] [--rounds 2] [--threads N]

Measures, in one run and on the same shapes (vocab 4096, context 256, batch 32):
(a) tinyinterp's training step (its Trainer: sampler, AdamW, LR schedule, clipping),
(b) a plain HookedTransformer training loop, (c) a minimal plain-PyTorch loop with
``scaled_dot_product_attention``. Rounds are interleaved (a, b, c, a, b, c, ...) and the
median per method is kept, so machine noise hits all three alike. Model FLOPs utilisation
uses 6·N + 12·L·T·d FLOPs per token against a measured fp32 matmul peak.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinyinterp.data.batches import WindowSampler
from tinyinterp.models import TinyTransformer, preset_config
from tinyinterp.training.config import TrainConfig
from tinyinterp.training.trainer import Trainer

VOCAB, CTX, BATCH = 4096, 256, 32


class PlainBlock(nn.Module):
    def __init__(self, d, h, m):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.proj = nn.Linear(d, m), nn.Linear(m, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(z.transpose(1, 2).reshape(b, t, d))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, L, d, h, m):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, d), nn.Embedding(CTX, d)
        self.blocks = nn.ModuleList(PlainBlock(d, h, m) for _ in range(L))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, VOCAB)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def make_tinyinterp(cfg_fields, data):
    tcfg = TrainConfig(data=["benchmark"], max_steps=10**6, batch_size=BATCH, warmup_steps=10, log_every=10**6,
                       eval_every=10**6, save_every=10**6)
    model = TinyTransformer(cfg_fields)
    trainer = Trainer(tcfg, model, WindowSampler([data], CTX, 0), 10**6, out=None)
    return lambda: trainer.train_step()


def make_hooked(cfg_fields, data):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(HookedTransformerConfig(**cfg_fields), move_to_device=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sampler = WindowSampler([data], CTX, 1)
    pos = [0]

    def step():
        batch = sampler.batch(pos[0], BATCH)
        pos[0] += BATCH
        loss = model(batch[:, :-1], return_type="loss")  # HookedTransformer's own next-token loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def make_plain(cfg_fields, data):
    model = PlainGPT(cfg_fields["n_layers"], cfg_fields["d_model"], cfg_fields["n_heads"], cfg_fields["d_mlp"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(2)

    def step():
        starts = rng.integers(0, len(data) - CTX - 1, BATCH)
        batch = torch.from_numpy(np.stack([data[s : s + CTX + 1] for s in starts]).astype(np.int64))
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_steps(step, n, warmup=2):
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(n):
        step()
    return n * BATCH * CTX / (time.perf_counter() - t)


def matmul_peak(n=1024, reps=10):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def flops_per_token(cfg):
    d, L, m = cfg["d_model"], cfg["n_layers"], cfg["d_mlp"]
    n = L * (4 * d * d + 2 * d * m) + d * VOCAB  # matmul parameters (unembedding included)
    return 6 * n + 12 * L * CTX * d


def bench_shape(name, cfg_fields, steps, rounds):
    data = np.random.default_rng(0).integers(1, VOCAB, 2_000_000).astype(np.uint16)
    makers = {"tinyinterp": make_tinyinterp, "hooked": make_hooked, "plain": make_plain}
    steppers = {k: f(cfg_fields, data) for k, f in makers.items()}
    results = {k: [] for k in makers}
    for r in range(rounds):
        for k, step in steppers.items():
            results[k].append(time_steps(step, steps, warmup=2 if r == 0 else 0))
            print(f"{name} round {r + 1}: {k} {results[k][-1]:,.0f} tokens/s", flush=True)
    return {k: {"tokens_per_s": statistics.median(v), "runs": v} for k, v in results.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per round and method")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median kept)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = matmul_peak()
    out = {"threads": torch.get_num_threads(), "matmul_peak_gflops": peak / 1e9, "vocab": VOCAB, "n_ctx": CTX, "batch": BATCH}
    for name, preset in (("ts-1m", "ts-1m"), ("cpu-1l", "cpu-1l")):
        cfg = preset_config(preset, VOCAB, n_ctx=CTX)
        res = bench_shape(name, cfg, args.steps, args.rounds)
        fpt = flops_per_token(cfg)
        for k in res:
            res[k]["mfu"] = res[k]["tokens_per_s"] * fpt / peak
        a, b, c = (res[k]["tokens_per_s"] for k in ("tinyinterp", "hooked", "plain"))
        out[name] = {**res, "ratio_vs_plain": a / c, "ratio_vs_hooked": a / b, "flops_per_token": fpt}
    t = out["ts-1m"]
    out["tokens_per_s"] = {k: t[k]["tokens_per_s"] for k in ("tinyinterp", "hooked", "plain")}
    out["ratio_vs_plain"], out["ratio_vs_hooked"] = t["ratio_vs_plain"], t["ratio_vs_hooked"]
    out["mfu"] = t["tinyinterp"]["mfu"]
    out["targets_met"] = {"ratio_vs_plain>=0.9": out["ratio_vs_plain"] >= 0.9, "ratio_vs_hooked>=4": out["ratio_vs_hooked"] >= 4}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
