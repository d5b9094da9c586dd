"""Screenshots of every explorer page for the docs (headless Chromium, see ``tests/support/browser.py``).

    .venv/bin/python docs/screenshots.py [--ckpt checkpoints/ts-1l] [--dynamics-ckpt checkpoints/ts-4l] [--out docs]

Writes ``explorer-overview.png``, ``-heads.png``, ``-neurons.png``, ``-playground.png`` (from
``--ckpt``), ``explorer-dynamics.png`` (from ``--dynamics-ckpt``, whose snapshots are analysed
first, into the explorer's cache, so the page has something to show) and
``explorer-compare.png`` (``--ckpt`` against ``--dynamics-ckpt``, both analysed and probed
first, into the same cache). Each PNG is re-encoded to stay under 300 KB.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from apps.explorer import catalog, store  # noqa: E402
from tests.support.browser import Chromium, serve, shrink_png  # noqa: E402

PAGES = {  # page: (url path, text that must be on screen before the shot)
    "overview": ("/", ["Model card", "Heads:"]),
    "heads": ("/heads", ["L0H0 is", "Attention of head L0H0"]),
    "neurons": ("/neurons", ["Max-activating examples"]),
    "playground": ("/playground", ["Tokens by part of speech", "Attention of head L0H0"]),
    "dynamics": ("/dynamics", ["Head labels over training"]),
    "compare": ("/compare?a={ckpt}&b={other}", ["Bits per byte", "Head labels per layer", "Linear probes"]),
}


def shoot(ckpt: Path, pages: list[str], out: Path, height: int, other: str = "") -> list[Path]:
    shots = []
    with serve(ckpt, root=ckpt.parent) as url, Chromium(size=(1400, 1000)) as browser:
        for page in pages:
            path, needles = PAGES[page]
            browser.goto(url + path.format(ckpt=ckpt.name, other=other))
            browser.wait_for([ckpt.name, *needles], timeout=180, settle=2.0)
            shot = browser.screenshot(out / f"explorer-{page}.png", full_height=height)
            shots.append(shrink_png(shot))
            logging.info("wrote %s (%d KB)", shot, shot.stat().st_size // 1024)
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=str(REPO / "checkpoints" / "ts-1l"), help="model for the first four pages")
    ap.add_argument("--dynamics-ckpt", default=str(REPO / "checkpoints" / "ts-4l"), help="model with snapshots/")
    ap.add_argument("--out", default=str(REPO / "docs"), help="folder for the PNGs")
    ap.add_argument("--height", type=int, default=1900, help="tallest screenshot, pixels")
    ap.add_argument("--max-snapshots", type=int, default=8, help="snapshots analysed for the dynamics page")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, dyn = Path(args.ckpt).resolve(), Path(args.dynamics_ckpt).resolve()
    for p in (ckpt, dyn):
        why = catalog.problem(p)
        if why:
            raise SystemExit(why)
    shoot(ckpt, ["overview", "heads", "neurons", "playground"], out, args.height)
    snaps = store.pick_snapshots(catalog.list_snapshots(dyn), args.max_snapshots)
    if not snaps:
        raise SystemExit(f"{dyn}: no snapshots/ to show on the dynamics page")
    say = lambda msg, _f: logging.info(msg)  # noqa: E731
    store.analyze_snapshots(dyn, snaps, say)
    shoot(dyn, ["dynamics"], out, args.height)
    for c in (ckpt, dyn):  # Compare shows both models' analyses and probes: compute what is missing first
        if store.find_analysis(c) is None:
            store.compute_analysis(c, say)
        if not (c / "analysis" / "probes.json").is_file():
            store.compute_probes(c, c, None, say)
    shoot(ckpt, ["compare"], out, args.height, other=dyn.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
