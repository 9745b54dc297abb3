"""How long one pointer move takes in the live explorer, in headless Chromium: decode z in the page and draw it.

Builds a decoder (by default an untrained 3x64x64 conv VAE with the default widths, or the model of --run), writes
its explorer page, and times in the page itself:
- decode: explorer.decode(z), the decoder's layers in JavaScript (float64);
- pointer move: a pointermove event on the map, whose handler decodes, draws the image and the marker;
and, from Python, a real mouse move through Playwright until the page has shown the new image (this adds the
driver's round trips, so it is an upper bound).

    python benchmarks/explorer_pointer.py                              # 64x64 RGB conv, default widths
    python benchmarks/explorer_pointer.py --arch resnet --size 64
    python benchmarks/explorer_pointer.py --run runs/shapes --data shapes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vaelab import RunConfig, build_model, load_data, load_run
from vaelab.data import ImageData
from vaelab.explorer import decoder_bytes, write_explorer_page
from vaelab.runs import Run

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 120_000

TIME_IN_PAGE = """([id, n]) => {
  const e = window.vaelabExplorers[id], c = e.mapCanvas, r = c.getBoundingClientRect();
  const zs = [], moves = [];
  for (let i = 0; i < n; i++) zs.push(e.pointToLatent(60 + (i * 37) % 300, 20 + (i * 53) % 300));
  let t = performance.now();
  zs.forEach(z => e.decode(z));
  const decode = (performance.now() - t) / n;
  for (let i = 0; i < n; i++) {
    const ev = new PointerEvent('pointermove', {clientX: r.left + 60 + (i * 41) % 300,
      clientY: r.top + 20 + (i * 29) % 300, pointerType: 'mouse', bubbles: true});
    t = performance.now();
    c.dispatchEvent(ev);
    moves.push(performance.now() - t);
  }
  return [decode, moves];
}"""


def _untrained(arch: str, size: int, channels: int, folder: Path) -> tuple[Run, ImageData]:
    torch.manual_seed(0)
    config = RunConfig(arch=arch)
    shape = (channels, size, size)
    x = torch.rand(200, *shape)
    (folder / "run").mkdir()
    return Run(folder / "run", config, build_model(config, shape).eval(), epoch=0), ImageData(
        "random", x, None, x, None
    )


def _mouse_moves(page, explorer_id: str, n: int) -> list[float]:
    box = page.evaluate(
        "id => { const r = window.vaelabExplorers[id].mapCanvas.getBoundingClientRect(); return [r.left, r.top]; }",
        explorer_id,
    )
    seconds = []
    for i in range(n):
        before = page.evaluate("id => window.vaelabExplorers[id].updates", explorer_id)
        start = time.perf_counter()
        page.mouse.move(box[0] + 60 + (i * 43) % 300, box[1] + 20 + (i * 31) % 300)
        page.wait_for_function(
            "([id, k]) => window.vaelabExplorers[id].updates > k", arg=[explorer_id, before], timeout=TIMEOUT_MS
        )
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="conv", choices=["mlp", "conv", "resnet"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--run", help="a trained run folder instead of an untrained model")
    parser.add_argument("--data", help="the run's data (with --run)")
    parser.add_argument("--n", type=int, default=30, help="moves timed")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.run:
            run = load_run(args.run)
            data = load_data(args.data or run.config.data)
        else:
            run, data = _untrained(args.arch, args.size, args.channels, folder)
        page_path = folder / "explorer.html"
        write_explorer_page(run, data, page_path)
        mib = decoder_bytes(run.model.decoder) / 2**20
        print(
            f"decoder {run.config.arch} for {tuple(run.model.image_shape)}: {mib:.1f} MiB float16, "
            f"page {page_path.stat().st_size / 2**20:.1f} MiB"
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1000, "height": 1200})
            start = time.perf_counter()
            page.goto(page_path.as_uri())
            explorer_id = page.evaluate("Object.keys(window.vaelabExplorers)[0]")
            print(f"page open and first image: {time.perf_counter() - start:.2f} s")
            page.evaluate(TIME_IN_PAGE, [explorer_id, 3])  # warm the JIT
            decode_ms, moves_ms = page.evaluate(TIME_IN_PAGE, [explorer_id, args.n])
            mouse = _mouse_moves(page, explorer_id, args.n)
            browser.close()
    print(f"decode in the page: {decode_ms:.1f} ms a latent point (mean of {args.n})")
    median, worst = statistics.median(moves_ms), max(moves_ms)
    print(f"pointer move in the page (decode + draw): median {median:.1f} ms, max {worst:.1f} ms")
    print(f"real mouse move via Playwright until the image is shown: median {1000 * statistics.median(mouse):.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
