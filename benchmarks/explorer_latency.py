"""Explorer latency: cold start to the first rendered page, and switching head or neuron.

    python benchmarks/explorer_latency.py [CKPT] [--repeats 6] [--no-browser]

CKPT defaults to ``checkpoints/ts-1l`` (it needs a precomputed ``analysis/`` folder; without
a CKPT and without the bundled model, a micro model is trained and analysed into a temporary
folder first, and the figures say so).

* ``cold_start_s`` — ``tinyinterp explore CKPT`` started from nothing (fresh Python process,
  empty cache folder) until headless Chromium shows the Overview page with the model's name
  and head counts; the whole wall time, server start and browser included. Without Chromium
  (or with ``--no-browser``) it is the AppTest figure below instead.
* ``cold_start_apptest_s`` — a fresh Python process that imports Streamlit's AppTest and runs
  the app's first page to completion (interpreter start included).
* ``switch_s`` — server-side time of one script run after choosing another head (Heads page),
  neuron (Neurons page) or model B (Compare page, among the checkpoints next to CKPT),
  measured with AppTest in this process after a warm-up (Compare: one visit of every model,
  which analyses a model without ``analysis/`` on demand); the median over ``--repeats``
  switches, the largest of the three medians.
* ``compare_first_open_s`` — the first opening of Compare (model A = CKPT, B = the next
  checkpoint), including the on-demand analysis of B when it ships none; not a target.

Targets (issues 5 and 16): cold start ≤ 10 s, switch ≤ 0.5 s (Compare included). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
APP = ROOT / "apps" / "explorer" / "Home.py"
TARGETS = {"cold_start_s": 10.0, "switch_s": 0.5}

CHILD = r"""
import os, sys, time, json
t0 = float(sys.argv[1])
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[2], default_timeout=300)
at.run()
ok = not at.exception and not at.error and bool(at.title) and at.title[0].value == sys.argv[3]
print(json.dumps({"s": time.time() - t0, "ok": ok}))
"""


def build_micro(tmp: Path) -> Path:
    """A micro checkpoint with analysis/, for machines without the bundled models."""
    from tests.support.stories import make_stories, write_txt

    import tinyinterp
    from tinyinterp.analysis.pipeline import AnalysisConfig
    from apps.explorer.live import tag_stories

    stories = make_stories(120, seed=0)
    write_txt(tmp / "train.txt", stories)
    ckpt = tmp / "checkpoints" / "micro"
    cfg = tinyinterp.TrainConfig(data=[str(tmp / "train.txt")], preset="micro", vocab_size=384, max_steps=60,
                                 batch_size=8, snapshots=3, sample_tokens=8)
    tinyinterp.train(cfg, ckpt)
    model = tinyinterp.load_model(ckpt)
    tinyinterp.analyze(model, tag_stories(model, stories[:40]), ckpt / "analysis",
                       AnalysisConfig(max_stories=None, run_probes=False, report=False), progress=False)
    write_txt(ckpt / "analysis" / "corpus.txt", stories[:40])  # as the bundled models ship it
    return ckpt


def env_for(ckpt: Path, cache: Path) -> dict[str, str]:
    return {**os.environ, "TINYINTERP_CACHE": str(cache), "TINYINTERP_EXPLORER_CKPT": str(ckpt),
            "TINYINTERP_EXPLORER_ROOT": str(ckpt.parent)}


def cold_apptest(ckpt: Path, cache: Path) -> float:
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD, str(t0), str(APP), ckpt.name], env=env_for(ckpt, cache),
                         capture_output=True, text=True, check=True, cwd=ROOT)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if not res["ok"]:
        raise RuntimeError(f"first page did not render cleanly: {out.stderr[-800:]}")
    return float(res["s"])


def cold_browser(ckpt: Path, cache: Path) -> float | None:
    from tests.support.browser import Chromium, find_chromium, serve

    if find_chromium() is None:
        return None
    env = {"TINYINTERP_CACHE": str(cache)}
    t0 = time.perf_counter()
    with serve(ckpt, root=ckpt.parent, env=env) as url, Chromium() as browser:
        browser.goto(url + "/")
        browser.wait_for([ckpt.name, "Heads:"], timeout=120, settle=0.0)
        return time.perf_counter() - t0


def _switch(at, page: str, label: str, repeats: int, warm: int = 1, keep=lambda option: True) -> list[float]:
    """Seconds per rerun after picking the next option of the ``label`` select box on ``page`` (only options
    ``keep`` accepts); the first ``warm`` switches fill caches and are not returned."""
    at.switch_page(page).run()
    box = next(s for s in at.selectbox if s.label == label)
    opts, times = [o for o in box.options if keep(o)], []
    for i in range(repeats + warm):
        t = time.perf_counter()
        at.selectbox(key=box.key).select(opts[(i + 1) % len(opts)]).run()
        times.append(time.perf_counter() - t)
    assert not at.exception, [e.value for e in at.exception]
    return times[warm:]


def switch_times(ckpt: Path, cache: Path, repeats: int) -> dict[str, list[float]]:
    """Switch times on the Heads, Neurons and Compare pages, and the first opening of Compare."""
    from streamlit.testing.v1 import AppTest

    os.environ.update(env_for(ckpt, cache))
    at = AppTest.from_file(str(APP), default_timeout=900)
    at.run()
    out = {"head": _switch(at, "views/heads.py", "Head", repeats),
           "neuron": _switch(at, "views/neurons.py", "Neuron", repeats)}
    t = time.perf_counter()  # Compare's first opening: B is another checkpoint, analysed now if it has no analysis/
    at.switch_page("views/compare.py").run()
    out["compare_first"] = [time.perf_counter() - t]
    models = [o for o in next(s for s in at.selectbox if s.label == "Model B").options if "snapshot" not in o]
    out["compare"] = _switch(at, "views/compare.py", "Model B", repeats, warm=len(models),
                             keep=lambda o: "snapshot" not in o)  # checkpoints only: snapshots wait for a button
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", nargs="?", help="checkpoint with analysis/ (default: checkpoints/ts-1l)")
    ap.add_argument("--repeats", type=int, default=6, help="switches timed per page")
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium cold start")
    ap.add_argument("--cache", help="explorer cache folder for the switch timings (default: a fresh one); one where "
                                    "the other checkpoints are already analysed keeps their on-demand analysis "
                                    "out of compare_first_open_s")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="explorer-bench-"))
    note = None
    if args.ckpt:
        ckpt = Path(args.ckpt).resolve()
    elif (ROOT / "checkpoints" / "ts-1l" / "analysis" / "heads.json").is_file():
        ckpt = ROOT / "checkpoints" / "ts-1l"
    else:
        note = "checkpoints/ts-1l not found: measured on a micro model trained for this run"
        print(note, flush=True)
        os.environ["TINYINTERP_CACHE"] = str(tmp / "build-cache")
        ckpt = build_micro(tmp)
    if not (ckpt / "analysis" / "heads.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        sys.exit(f"{ckpt}: no precomputed analysis/ (run `tinyinterp analyze {ckpt} --corpus … --out {ckpt}/analysis`)")

    try:
        result = measure(ckpt, tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if note:
        result["note"] = note
    print(json.dumps(result))


def measure(ckpt: Path, tmp: Path, args: argparse.Namespace) -> dict:
    cold_at = cold_apptest(ckpt, tmp / "cache-apptest")
    print(f"cold start (fresh process, AppTest, first page): {cold_at:.2f} s", flush=True)
    cold_br = None if args.no_browser else cold_browser(ckpt, tmp / "cache-browser")
    if cold_br is not None:
        print(f"cold start (tinyinterp explore → Chromium shows the Overview): {cold_br:.2f} s", flush=True)
    times = switch_times(ckpt, Path(args.cache) if args.cache else tmp / "cache-switch", args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    for what in ("head", "neuron", "compare"):
        print(f"switch {what + ':':<9} median {med[what] * 1000:.0f} ms, max {max(times[what]) * 1000:.0f} ms "
              f"over {len(times[what])}")
    print(f"compare page, first opening (analyses the other model when it has none): {med['compare_first']:.1f} s")
    result = {
        "checkpoint": str(ckpt), "cold_start_s": round(cold_br if cold_br is not None else cold_at, 3),
        "cold_start_measure": "chromium" if cold_br is not None else "apptest",
        "cold_start_apptest_s": round(cold_at, 3), "switch_s": round(max(med["head"], med["neuron"], med["compare"]), 4),
        **{f"switch_{w}_s": round(med[w], 4) for w in ("head", "neuron", "compare")},
        **{f"switch_{w}_max_s": round(max(times[w]), 4) for w in ("head", "neuron", "compare")},
        "compare_first_open_s": round(med["compare_first"], 2), "cache": "given" if args.cache else "fresh",
        "targets": TARGETS,
    }
    result["meets_targets"] = result["cold_start_s"] <= TARGETS["cold_start_s"] and result["switch_s"] <= TARGETS["switch_s"]
    return result


if __name__ == "__main__":
    main()
