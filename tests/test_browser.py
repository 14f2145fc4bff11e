"""
The chat page in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) against the real twistd, next to a
loopback TCP client. Set SOCKSERVICE_SCREENSHOT=PATH to keep a screenshot of
the page (docs/browser-chat.png is one).
"""

import os
import shutil
import tempfile

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.realserver import connectPeer
from tests.support import makeCertificate
from tests.test_websocket_twistd import startWithWebSocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT = 15


class Chromium:
    """
    A headless Chromium showing one page. Every method blocks: call them in
    a thread.
    """

    def __init__(self, testCase, insecure=False):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = tempfile.mkdtemp()
        for argument in ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=720,480",
                         f"--user-data-dir={profile}"]:
            options.add_argument(argument)
        if insecure:
            # The throwaway certificate of the wss test.
            options.add_argument("--ignore-certificate-errors")
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(WAIT)
        testCase.addCleanup(shutil.rmtree, profile, True)
        testCase.addCleanup(self.driver.quit)

    def _wait(self, condition, what):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT).until(lambda d: condition(), what)

    def open(self, url, token=None):
        """
        Load the page at C{url} and wait until it is connected, typing
        C{token} into its token field first if given.
        """
        from selenium.webdriver.common.keys import Keys

        self.driver.get(url)
        if token is not None:
            self._wait(lambda: self.driver.find_element("id", "token").is_displayed(),
                       "the token field")
            self.driver.find_element("id", "token").send_keys(token + Keys.ENTER)
        self._wait(lambda: self.status() == "connected", f"the page connected to {url}")

    def status(self):
        return self.driver.find_element("id", "status").text

    def messages(self):
        items = self.driver.find_elements("css selector", "#messages li")
        return [(item.get_attribute("class"), item.text) for item in items]

    def waitForMessage(self, text):
        """
        Wait until the page shows C{text} received; return every message.
        """
        self._wait(lambda: ("in", text) in self.messages(), f"the page showing {text!r}")
        return self.messages()

    def type(self, line):
        from selenium.webdriver.common.keys import Keys

        self.driver.find_element("id", "line").send_keys(line + Keys.ENTER)

    def screenshot(self):
        path = os.environ.get("SOCKSERVICE_SCREENSHOT")
        if path:
            self.driver.save_screenshot(path)


class BrowserTests(TestCase):
    timeout = 120

    def setUp(self):
        if CHROMIUM is None or CHROMEDRIVER is None:
            raise SkipTest("needs chromium and chromedriver (Debian: chromium chromium-driver)")

    @inlineCallbacks
    def chat(self, scheme, insecure=False, **websocket):
        """
        The page and an nc-style client on one relay: the greeting shows, a
        line typed in the page reaches TCP byte for byte, a TCP line shows
        in the page.
        """
        server, tcpPort, webPort = yield startWithWebSocket(
            self, "--mode", "relay", "--greeting", "welcome to the relay", **websocket
        )
        peer = yield connectPeer(self, tcpPort)
        greeting = b"welcome to the relay\n"
        yield peer.receive(len(greeting))
        browser = yield deferToThread(Chromium, self, insecure)
        yield deferToThread(browser.open, f"{scheme}://localhost:{webPort}/")
        shown = yield deferToThread(browser.waitForMessage, "welcome to the relay")
        self.assertEqual(shown, [("in", "welcome to the relay")])
        yield deferToThread(browser.type, "hello from Chromium, 你好")
        typed = greeting + "hello from Chromium, 你好\n".encode()
        self.assertEqual((yield peer.receive(len(typed))), typed)
        peer.send("hi from nc, café\r\n".encode())
        shown = yield deferToThread(browser.waitForMessage, "hi from nc, café")
        self.assertEqual(shown, [
            ("in", "welcome to the relay"),
            ("out", "hello from Chromium, 你好"),
            ("in", "hi from nc, café"),
        ])
        yield deferToThread(browser.screenshot)
        self.assertEqual(peer.data, typed)

    def test_ws(self):
        return self.chat("http")

    @inlineCallbacks
    def test_token(self):
        """
        With --token-file the page asks for the token and sends it first;
        then it is a relay member like the TCP client that sent it too.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        tokenFile = os.path.join(directory, "token")
        with open(tokenFile, "w") as f:
            f.write("s3cret\n")
        server, tcpPort, webPort = yield startWithWebSocket(
            self, "--mode", "relay", "--token-file", tokenFile
        )
        peer = yield connectPeer(self, tcpPort)
        peer.send(b"s3cret\n")
        browser = yield deferToThread(Chromium, self)
        yield deferToThread(browser.open, f"http://127.0.0.1:{webPort}/", "s3cret")
        yield deferToThread(browser.type, "with the token")
        self.assertEqual((yield peer.receive(15)), b"with the token\n")
        peer.send(b"welcome in\n")
        yield deferToThread(browser.waitForMessage, "welcome in")

    def test_wss(self):
        keyPath, certPath = makeCertificate(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, os.path.dirname(keyPath), True)
        return self.chat(
            "https", insecure=True,
            websocket=f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}",
        )
