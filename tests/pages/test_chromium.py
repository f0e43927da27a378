"""The Chromium driver the page tests rely on can fail: it sees console errors, uncaught exceptions,
requests that leave the file, and a page that never gets ready."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chromium import ChromiumError, chromium

pytestmark = pytest.mark.real


def test_driver_reports_errors_and_network(tmp_path: Path) -> None:
    page_file = tmp_path / "bad.html"
    page_file.write_text(
        "<!doctype html><html><body><p id=x>hi</p><script>"
        "console.error('boom'); fetch('http://127.0.0.1:9/x').catch(() => {});"
        "setTimeout(() => { window.ready = true; undefinedFunction(); }, 50);"
        "</script></body></html>"
    )
    with chromium() as browser:
        page = browser.open(page_file, ready="window.ready === true")
        assert page.evaluate("document.getElementById('x').textContent") == "hi"
        page.collect()
        shot = page.screenshot(tmp_path / "bad.png")
    assert "boom" in page.errors
    assert any("undefinedFunction" in error for error in page.errors)
    assert page.network == ["http://127.0.0.1:9/x"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_driver_gives_up_on_a_page_that_never_gets_ready(tmp_path: Path) -> None:
    page_file = tmp_path / "never.html"
    page_file.write_text("<!doctype html><p>never ready</p>")
    with chromium() as browser, pytest.raises(ChromiumError, match="not ready after"):
        browser.open(page_file, ready="window.never === true", timeout=2)
