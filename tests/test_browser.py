"""
The WebSocket console in a real browser: Debian's headless chromium, driven
by Selenium through Debian's chromedriver (no browser or driver downloads).

``.ci/run`` installs both; elsewhere the test is skipped when they are
missing, except under CI, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from netlab import http
from tests.support import TwistedServer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _need_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = (
            f"needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            raise AssertionError(reason)
        raise SkipTest(reason)


def talk_through_the_page(url: str, message: str) -> tuple[str, str]:
    """
    Open the console at ``url``, wait for the WebSocket to open, send
    ``message`` and wait for its echo.

    :return: the connection state and the page's log, as the page shows them.
    """
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(url)
        wait = WebDriverWait(driver, 30)
        wait.until(seen.text_to_be_present_in_element((By.ID, "state"), "open"))
        driver.find_element(By.ID, "message").send_keys(message)
        driver.find_element(By.ID, "button").click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "log"), "Echo: "))
        return (
            driver.find_element(By.ID, "state").text,
            driver.find_element(By.ID, "log").text,
        )
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class ConsoleTests(TestCase):
    timeout = 180

    async def test_echo_in_the_browser(self) -> None:
        """
        A person types a message on the page and sees the server's echo.
        """
        _need_browser()
        running = await TwistedServer(http.HTTPSite).start()
        self.addCleanup(running.stop)
        url = f"http://{running.host}:{running.port}/console"
        state, log = await deferToThread(talk_through_the_page, url, "hello, browser ✓")
        self.assertEqual(state, "open")
        self.assertEqual(
            log.splitlines(), ["> hello, browser ✓", "Echo: hello, browser ✓"]
        )
