"""Screenshot the demo page after a photo search, for docs/demo.png.

Drives the system chromium with playwright (no browser download) against a running
server, uploads one photo, waits for the result cards and their photos, and saves a
PNG; photos make big PNGs, so the image is reduced to a 256-colour palette when it
is over ``--max-kb``.

Usage: python scripts/demo_screenshot.py --url http://127.0.0.1:8000 --photo DISH.jpg
       [--out docs/demo.png] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALL_PHOTOS_SETTLED = """
() => {
  const imgs = [...document.querySelectorAll('.card .photo img')];
  return document.querySelector('.card') !== null && imgs.every(i => i.complete);
}
"""


def capture(url: str, photo: Path, chromium: str, width: int, height: int) -> bytes:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_selector("#status .model")
        page.set_input_files("#photo", str(photo))
        page.wait_for_function(ALL_PHOTOS_SETTLED)
        png: bytes = page.screenshot()
        browser.close()
    return png


def shrink(png: bytes, max_kb: int) -> bytes:
    if len(png) <= max_kb * 1024:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/demo.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--max-kb", type=int, default=290)
    args = parser.parse_args()
    png = shrink(capture(args.url, args.photo, args.chromium, args.width, args.height), args.max_kb)
    args.out.write_bytes(png)
    print(f"wrote {args.out} ({len(png) // 1024} KB)")


if __name__ == "__main__":
    main()
