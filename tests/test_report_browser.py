"""The demo's report in a real headless browser: every image loads, and the page renders. Slow; skipped where no
Chromium is installed (Debian: apt-get install chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from distill.cli import main

BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install chromium)"),
]


def _browse(*args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: the sandbox needs privileges a container or a CI runner rarely grants
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
    return subprocess.run([BROWSER, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def test_the_demo_report_renders_with_every_image_loaded(tmp_path):
    from PIL import Image

    assert main(["demo", "--set", f"out_dir={tmp_path}", "-q"]) == 0
    page = (tmp_path / "demo" / "report.html").as_uri()
    images = len(re.findall(r"<img ", (tmp_path / "demo" / "report.html").read_text()))

    dom = _browse("--dump-dom", page).stdout  # the page after its load event ran
    assert f'data-images="{images}/{images}"' in dom

    shot = tmp_path / "report.png"
    _browse("--window-size=1280,1600", f"--screenshot={shot}", page)
    picture = Image.open(shot).convert("L")
    assert picture.size == (1280, 1600)
    low, high = picture.getextrema()
    assert high - low > 200  # text and plots on the page, not a blank or an error page
    histogram = picture.histogram()
    assert sum(histogram[:128]) > 0.01 * sum(histogram)  # a fair share of dark pixels: text, axes, bars
