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

from netlab.services import hello
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


def _browser():
    """
    :return: a Selenium driver of Debian's headless chromium, with a fresh
        profile, and the profile's folder.
    """
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver, profile


def talk_through_the_page(url: str, message: str) -> tuple[str, str]:
    """
    Open the console at ``url``, wait for the WebSocket to open, send
    ``message`` and wait for its echo.

    :return: the connection state and the page's log, as the page shows them.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    driver, profile = _browser()
    try:
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
        running = await TwistedServer(hello.site).start()
        self.addCleanup(running.stop)
        url = f"http://{running.host}:{running.port}/console"
        state, log = await deferToThread(talk_through_the_page, url, "hello, browser ✓")
        self.assertEqual(state, "open")
        self.assertEqual(
            log.splitlines(), ["> hello, browser ✓", "Echo: hello, browser ✓"]
        )


def chat_in_two_tabs(base: str, alice: str, bob: str) -> tuple[str, str]:
    """
    Open the chat example in two tabs, alice's and bob's (each logged in by
    the token in its address), join ``lobby`` in both, and have each say
    something to the other.

    :return: each tab's log, as the page shows it.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    driver, profile = _browser()
    try:
        wait = WebDriverWait(driver, 30)
        tabs = {}
        for name, token in (("alice", alice), ("bob", bob)):
            if tabs:
                driver.switch_to.new_window("tab")
            driver.get(f"{base}/#token={token}")
            wait.until(seen.text_to_be_present_in_element((By.ID, "state"), "open"))
            driver.find_element(By.ID, "join-button").click()
            wait.until(seen.text_to_be_present_in_element((By.ID, "log"), "joined"))
            tabs[name] = driver.current_window_handle

        def say(name: str, text: str, heard_by: str) -> None:
            driver.switch_to.window(tabs[name])
            driver.find_element(By.ID, "message").send_keys(text)
            driver.find_element(By.ID, "send-button").click()
            driver.switch_to.window(tabs[heard_by])
            wait.until(seen.text_to_be_present_in_element((By.ID, "log"), text))

        say("alice", "hi bob <b>not bold</b>", "bob")
        say("bob", "hello alice", "alice")
        logs = []
        for name in ("alice", "bob"):
            driver.switch_to.window(tabs[name])
            logs.append(driver.find_element(By.ID, "log").text)
        return logs[0], logs[1]
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class ChatTests(TestCase):
    timeout = 180

    async def test_two_tabs_talk(self) -> None:
        """
        The chat example: alice and bob, each in a tab, talk through a room.
        """
        _need_browser()
        from tests.test_chat import Chat

        chat = await Chat(self).start()
        alice, bob = await deferToThread(
            chat_in_two_tabs,
            f"http://127.0.0.1:{chat.port}",
            chat.token("alice"),
            chat.token("bob"),
        )
        self.assertIn("[lobby] alice: hi bob <b>not bold</b>", bob)
        self.assertIn("[lobby] bob: hello alice", alice)
        self.assertIn("[lobby] bob joins", alice)
        self.assertIn("joined; here: alice, bob", bob)
