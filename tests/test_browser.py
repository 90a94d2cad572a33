"""
The WebSocket console in a real browser: Debian's headless chromium, driven
by Selenium through Debian's chromedriver (no browser or driver downloads).

``.ci/run`` installs both; elsewhere the test is skipped when they are
missing, except under CI (``NETLAB_CI``), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from netlab.services import hello
from netlab.testing import serve
from tests.support import TwistedServer, require

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
    require(
        not missing,
        f"needs {', '.join(missing)} (apt-get install chromium chromium-driver)",
    )


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


class ConsolePage:
    """
    The console in a browser, one step at a time: each method blocks until
    the page shows what it waits for (at most 30 seconds), so run each in a
    thread (``deferToThread``) while the reactor serves the page.
    """

    def __init__(self, url: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.by = By
        self.driver, self.profile = _browser()
        self.driver.set_script_timeout(30)
        self.wait = WebDriverWait(self.driver, 30)
        self.driver.get(url)

    def close(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def text(self, element: str) -> str:
        return self.driver.find_element(self.by.ID, element).text

    def shows(self, element: str, text: str, exactly: bool = False) -> str:
        """
        Wait until ``element`` shows ``text`` (``exactly``: nothing else;
        "disconnected" has "connected" in it).

        :return: all the element's text.
        """
        from selenium.common.exceptions import TimeoutException

        def seen(driver: Any) -> bool:
            shown = self.text(element)
            return shown == text if exactly else text in shown

        try:
            self.wait.until(seen)
        except TimeoutException:
            raise AssertionError(
                f"#{element} never showed {text!r}: {self.text(element)!r}"
                f" (state: {self.text('state')!r})"
            ) from None
        return self.text(element)

    def type(self, message: str) -> None:
        self.driver.find_element(self.by.ID, "message").send_keys(message)

    def send(self) -> None:
        self.driver.find_element(self.by.ID, "button").click()

    def overflows(self, element: str) -> bool:
        """
        :return: whether ``element``'s content is wider than the element.
        """
        return self.driver.execute_script(
            "const e = document.getElementById(arguments[0]);"
            "return e.scrollWidth > e.clientWidth;",
            element,
        )

    def icon(self) -> str:
        """
        Load the page's icon as an image, under the page's
        Content-Security-Policy, as the browser's tab does.

        :return: ``loaded``, ``failed`` or ``none`` (no icon link).
        """
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const link = document.querySelector('link[rel=icon]');"
            "if (!link) { done('none'); return; }"
            "const image = new Image();"
            "image.onload = () => done('loaded');"
            "image.onerror = () => done('failed');"
            "image.src = link.href;"
        )


class ConsoleTests(TestCase):
    timeout = 180

    async def open(self, port: int) -> ConsolePage:
        """
        The console of the server on ``port``, connected; closed when the
        test ends.
        """
        page = await deferToThread(ConsolePage, f"http://127.0.0.1:{port}/console")
        self.addCleanup(deferToThread, page.close)
        await deferToThread(page.shows, "state", "connected", True)
        return page

    async def test_echo_in_the_browser(self) -> None:
        """
        A person types a message on the page and sees the server's echo; a
        long one wraps; the page has its icon.
        """
        _need_browser()
        running = await TwistedServer(hello.site).start()
        self.addCleanup(running.stop)
        page = await self.open(running.port)
        await deferToThread(page.type, "hello, browser ✓")
        await deferToThread(page.send)
        log = await deferToThread(page.shows, "log", "Echo: ")
        self.assertEqual(
            log.splitlines(), ["> hello, browser ✓", "Echo: hello, browser ✓"]
        )
        self.assertEqual(await deferToThread(page.text, "state"), "connected")

        word = "w" * 2000  # no space to break at
        await deferToThread(page.type, word)
        await deferToThread(page.send)
        await deferToThread(page.shows, "log", "Echo: " + word)
        self.assertFalse(await deferToThread(page.overflows, "log"))

        self.assertEqual(await deferToThread(page.icon), "loaded")

    async def test_reconnects_after_a_restart(self) -> None:
        """
        The server stops: the page says it is disconnected and refuses a
        message, visibly, keeping it; a server starts again on the same port:
        the page reconnects by itself, and the kept message goes through.
        """
        _need_browser()
        first = await serve(self, hello.site())
        page = await self.open(first.port)
        await first.stop()
        state = await deferToThread(page.shows, "state", "disconnected")
        self.assertIn("reconnecting in", state)

        await deferToThread(page.type, "while down")
        await deferToThread(page.send)
        await deferToThread(page.shows, "log", "not sent, not connected: while down")

        await serve(self, hello.site(), port=first.port)
        await deferToThread(page.shows, "state", "connected", True)
        await deferToThread(page.send)  # the refused text is still in the box
        log = await deferToThread(page.shows, "log", "Echo: while down")
        self.assertEqual(
            log.splitlines(),
            ["not sent, not connected: while down", "> while down", "Echo: while down"],
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
