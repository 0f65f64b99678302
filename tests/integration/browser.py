"""Headless Chromium for the dashboard tests (Debian's chromium and chromium-driver; CI
installs them), driven by Selenium without Selenium Manager: the driver and browser paths are
given, so nothing is looked up or downloaded."""
from __future__ import annotations

import os
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MISSING = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
if MISSING and os.environ.get("GRPCMESH_CI"):  # CI installs them: never skip there
    raise RuntimeError(f"{', '.join(MISSING)} not installed; .ci/run installs Debian's "
                       "chromium and chromium-driver")


def chromium(width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium WebDriver (the caller quits it)."""
    os.environ["SE_OFFLINE"] = "true"  # (Selenium Manager is not run anyway: paths given)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-extensions", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 "--force-device-scale-factor=1", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
