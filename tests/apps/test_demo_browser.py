"""End to end in a real headless browser: Debian's chromium driven by Playwright.

Uploads a real chest X-ray and a real 12-lead ECG (``.hea`` + ``.mat`` selected together), checks
that probabilities, the ECG plot and similar cases appear, then that a wrong file type shows the
error panel. Screenshots go to ``tests/artifacts/`` (git-ignored); their paths are printed.

Skipped when ``/usr/bin/chromium`` or Playwright is missing, except in CI (``CI`` set), where that
is a failure. Never runs ``playwright install``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TIMEOUT_MS = 90_000


def _require_browser() -> None:
    missing = None
    if not CHROMIUM.is_file():
        missing = f"{CHROMIUM} not found (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install playwright)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test needs {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def page(demo_url: str) -> Iterator[Any]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(TIMEOUT_MS)
            yield pg
        finally:
            browser.close()


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_upload_real_xray_and_ecg_shows_results(
    page: Any, demo_url: str, real_xray: Path, real_ecg_pair: tuple[Path, Path]
) -> None:
    from playwright.sync_api import expect

    page.goto(demo_url)
    expect(page.locator("#notice")).to_contain_text("Research use only")
    page.locator('#xray-upload input[type="file"]').set_input_files(str(real_xray))
    page.locator('#ecg-upload input[type="file"]').set_input_files([str(p) for p in real_ecg_pair])
    ecg_box = page.locator("#ecg-upload")
    expect(ecg_box.get_by_role("cell", name="HR06000.mat")).to_be_visible()
    expect(ecg_box.get_by_role("cell", name="HR06000.hea")).to_be_visible()
    page.locator("#analyze").click()
    probs = page.locator("#probs")
    expect(probs).to_contain_text("%", timeout=TIMEOUT_MS)
    expect(probs.get_by_role("meter").first).to_be_visible()
    expect(page.locator("#prob-table")).to_contain_text("AFIB")  # every label, sorted
    expect(page.locator("#ecg-plot img")).to_be_visible()
    expect(page.locator("#xray-image img")).to_be_visible()
    expect(page.locator("#similar img").first).to_be_visible()
    assert page.locator("#similar img").count() >= 1
    expect(page.locator("#similar-table")).to_contain_text("ecg")
    expect(page.locator("#probs-notice")).to_contain_text("SYNTHETIC")
    proto = page.locator("#proto-plot img")
    proto.scroll_into_view_if_needed()
    expect(proto).to_be_visible()
    assert page.locator("#error").inner_text().strip() == ""
    _shot(page, "demo_browser_results.png")


def test_wrong_file_type_shows_the_error_panel(page: Any, demo_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    wrong = tmp_path / "notes.txt"
    wrong.write_text("this is not an X-ray")
    page.goto(demo_url)
    page.locator('#xray-upload input[type="file"]').set_input_files(str(wrong))
    expect(page.locator("#xray-upload").get_by_role("cell", name="notes.txt")).to_be_visible()
    page.locator("#analyze").click()
    expect(page.locator("#error")).to_contain_text("is not accepted", timeout=TIMEOUT_MS)
    expect(page.locator("#error")).to_contain_text("DICOM (.dcm), PNG or JPEG")
    _shot(page, "demo_browser_error.png")
