"""Headless Chromium for the e2e tests: Debian's `chromium` and `chromium-driver`, via selenium.

:func:`chromium_or_skip` skips the calling test, saying how to install what is missing,
on a machine without the browser (`.ci/run` installs it). :func:`wait_for` polls a
condition: pages refresh themselves, so a test waits for the figures it checks.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: screenshots and page sources of the browser tests (gitignored; CI keeps them as artifacts)
ARTIFACTS = Path(os.environ.get("RAYLANE_TEST_ARTIFACTS", ROOT / "test-artifacts"))

INSTALL_HINT = (
    "install Debian's headless browser: `sudo apt-get install -y chromium chromium-driver` "
    "(.ci/run does this), then `make setup` for selenium"
)

T = TypeVar("T")


def _binary(*names: str) -> str | None:
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    return None


def chromium_or_skip(width: int = 1440, height: int = 1000) -> Any:
    """A headless Chromium WebDriver, or skip the test naming what to install."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip(f"selenium is not installed; {INSTALL_HINT}")
    browser = _binary("chromium", "chromium-browser", "google-chrome")
    driver = _binary("chromedriver")
    if browser is None or driver is None:
        missing = [n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None]
        pytest.skip(f"no {' or '.join(missing)} on PATH; {INSTALL_HINT}")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def to_fixed(v: float, digits: int) -> str:
    """``v.toFixed(digits)`` as JavaScript writes it: the float's exact value rounded, a tie
    away from zero (Python's format rounds a tie such as 99.625 to even: 99.62, not 99.63)."""
    return str(Decimal(v).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def js_round(v: float) -> int:
    """``Math.round(v)``: the nearest integer, a tie towards +infinity (Python's round: to
    even)."""
    below = math.floor(v)
    return below + 1 if v - below >= 0.5 else below


#: values where JavaScript's rounding and Python's differ, for a test to check the two
#: functions above against the browser it reads
TIES = (99.625, 0.125, -0.125, 2.5, -2.5, 1.005, 12.3456785)


def wait_for(what: str, fn: Callable[[], T | None], timeout_s: float, every_s: float = 0.5) -> T:
    """Poll `fn` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = fn()
        except Exception as e:  # a page mid-refresh: its element was just replaced
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}; last: {last!r}")
        time.sleep(every_s)


def wait_equal(
    what: str,
    fn: Callable[[], tuple[dict[str, str], dict[str, str], bool]],
    timeout_s: float,
    every_s: float = 0.5,
) -> None:
    """Poll `fn` -> (want, shown, ready) until ready and shown == want; fail showing both."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            want, shown, ready = fn()
            if ready and shown == want:
                return
            last = f"want {want!r}, shown {shown!r}, ready {ready}"
        except Exception as e:  # a page mid-refresh: its element was just replaced
            last = e
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}; last: {last}")
        time.sleep(every_s)


def screenshot(driver: Any, name: str) -> Path:
    """A full-page PNG of the current page under test-artifacts/dashboard/ (DevTools
    protocol: the whole document, not only the window)."""
    import base64

    out = ARTIFACTS / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    time.sleep(0.5)  # Plotly finishes its transitions
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": min(size["height"], 8000),
                "scale": 1,
            },
        },
    )
    path = out / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
