"""The live page in a real browser: Debian's chromium, headless, driven by selenium through chromium-driver.

One page session walks what a person does: sees a listener appear, narrows the table with a
filter, watches a connection arrive, then leave into the log, and mistypes a filter.
Screenshots of each step are left in the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver (scripts/test installs them as root)")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
WAIT = 40.0  # seconds: a refresh of a host with 50,000 sockets takes a few


@pytest.fixture
def page_server() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sockscope", "web", "--listen", f"127.0.0.1:{port}", "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "serving the live page on" in line, server.stderr.read() if server.stderr else line
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        try:
            assert server.wait(timeout=10) == 0  # SIGTERM: a clean stop
        finally:
            server.kill()
            server.wait()
            for stream in (server.stdout, server.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def texts(driver: Any, selector: str) -> list[str]:
    return [str(line) for line in driver.execute_script(f"return [...document.querySelectorAll({selector!r})].map(e => e.textContent)")]


def wait_for(driver: Any, what: str, condition: Any, shots: Path) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.25).until(condition)
    except TimeoutException:
        driver.save_screenshot(str(shots / f"failed-{what}.png"))
        raise AssertionError(f"the page never showed {what} (screenshot in {shots})") from None
    driver.save_screenshot(str(shots / f"{what}.png"))


def test_the_page_follows_a_listener_a_connection_the_filter_and_the_log(page_server: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    port = free_port()
    socat = subprocess.Popen(["socat", "-u", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "-"], stdout=subprocess.DEVNULL)
    nc = None
    try:
        browser.get(page_server)
        wait_for(browser, "the-listener", lambda d: any(f"127.0.0.1:{port}" in row and "socat" in row for row in texts(d, "#listeners tbody tr")), tmp_path)

        box = browser.find_element(By.ID, "filter")
        box.send_keys(f"sport = {port} or dport = {port}", Keys.ENTER)

        def narrowed(driver: Any) -> bool:
            rows = texts(driver, "#connections tbody tr")
            return bool(rows) and all(str(port) in row for row in rows)

        wait_for(browser, "the-filtered-table", narrowed, tmp_path)
        assert len(texts(browser, "#connections tbody tr")) == 1  # the listener alone, of every socket of the host

        nc = subprocess.Popen(["nc", "-N", "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        wait_for(browser, "the-connection", lambda d: sum("ESTAB" in row for row in texts(d, "#connections tbody tr")) == 2, tmp_path)

        assert nc.stdin is not None
        nc.stdin.close()
        wait_for(browser, "the-log", lambda d: any("close" in line and f":{port}" in line for line in texts(d, "#log li")), tmp_path)

        box.clear()
        box.send_keys("sport = = (", Keys.ENTER)
        wait_for(browser, "the-error", lambda d: d.find_element(By.ID, "error").is_displayed(), tmp_path)
        assert "bad filter" in browser.find_element(By.ID, "error").text
        assert "bad" in (box.get_attribute("class") or "")
        assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        for process in (nc, socat):
            if process is not None:
                process.kill()
                process.wait()
    assert os.listdir(tmp_path)
