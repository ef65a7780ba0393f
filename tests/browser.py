"""A headless Chromium driven by Selenium, for the app's browser tests and its screenshots (``docs/screenshots.py``).

Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``, as ``.ci/run`` does): no
browser download, which does not work on offline machines. The flags keep it from reaching any outside host.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def find(candidates) -> str | None:
    return next((path for path in map(shutil.which, candidates) if path), None)


@contextmanager
def chromium(width: int = 1280, height: int = 1000):
    """A Selenium ``webdriver.Chrome`` on Debian's Chromium with a new empty profile; quit on exit.

    ``FileNotFoundError`` naming the apt packages when Chromium or its driver is missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = find(CHROMIUM), find(CHROMEDRIVER)
    if not binary or not driver_path:
        raise FileNotFoundError(
            "Chromium and its driver are needed for the browser tests and screenshots: "
            "apt-get install chromium chromium-driver (what .ci/run does)"
        )
    profile = tempfile.mkdtemp(prefix="camtl-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)  # a given driver: no Selenium Manager
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class GradioPage:
    """What a visitor sees and does on a Gradio page: tabs, buttons, example tables, the text boxes shown."""

    def __init__(self, driver, url: str, timeout: float = 120):
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.timeout = driver, timeout
        driver.get(url)
        WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: self.textboxes())  # the page is drawn

    def wait(self, condition, message: str = ""):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, self.timeout, poll_frequency=0.1).until(lambda d: condition(), message)

    def settle(self, quiet: float = 1.0) -> list[tuple[str, str]]:
        """Wait until the text boxes shown (labels and values) have not changed for ``quiet`` seconds: every event
        that a click set off (an example's load, the view updates chained to it) has landed. Returns them."""
        import time

        last, since = None, time.monotonic()
        deadline = since + self.timeout
        while time.monotonic() < deadline:
            now = self.textboxes()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
            time.sleep(0.1)
        raise TimeoutError(f"the page kept changing for {self.timeout} s: {last}")

    def _buttons(self) -> list:
        from selenium.webdriver.common.by import By

        return [b for b in self.driver.find_elements(By.TAG_NAME, "button") if b.is_displayed()]

    def click(self, text: str) -> None:
        """Click the visible button (or tab) whose text is ``text``."""
        from selenium.common.exceptions import ElementClickInterceptedException

        buttons = [b for b in self._buttons() if b.text.strip() == text]
        if not buttons:
            raise LookupError(f"no visible button {text!r}; visible: {[b.text for b in self._buttons()]}")
        buttons.sort(key=lambda b: b.get_attribute("role") != "tab")  # a tab's own button before its menu copies
        try:
            buttons[0].click()
        except ElementClickInterceptedException:  # covered for a moment (a toast, an animation): click it directly
            self.driver.execute_script("arguments[0].click()", buttons[0])

    def example_rows(self) -> list:
        """The rows of the visible examples table."""
        from selenium.webdriver.common.by import By

        return [r for r in self.driver.find_elements(By.CSS_SELECTOR, "table tbody tr") if r.is_displayed()]

    def textboxes(self) -> list[tuple[str, str]]:
        """``(label, value)`` of every text box shown on the page (hidden ones and those of other tabs left out)."""
        return [
            tuple(x)
            for x in self.driver.execute_script(
                "return [...document.querySelectorAll('textarea')]"
                ".filter(t => t.offsetParent !== null && t.getClientRects().length)"
                ".map(t => [(t.closest('label')?.querySelector('span')?.innerText || '').trim(), t.value])"
            )
        ]

    def type_into(self, label: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        boxes = [
            b
            for b in self.driver.find_elements(By.XPATH, f"//label[.//span[normalize-space()='{label}']]//textarea")
            if b.is_displayed()
        ]
        if not boxes:
            raise LookupError(f"no visible text box {label!r}; shown: {self.textboxes()}")
        boxes[0].clear()
        boxes[0].send_keys(text)

    def set_value(self, label: str, text: str) -> None:
        """Put ``text`` in the visible text box ``label`` as typing would (an input event), through JavaScript:
        ChromeDriver's send_keys cannot type characters outside the Basic Multilingual Plane (emoji)."""
        from selenium.webdriver.common.by import By

        boxes = [
            b
            for b in self.driver.find_elements(By.XPATH, f"//label[.//span[normalize-space()='{label}']]//textarea")
            if b.is_displayed()
        ]
        if not boxes:
            raise LookupError(f"no visible text box {label!r}; shown: {self.textboxes()}")
        self.driver.execute_script(
            "const set = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set;"
            "set.call(arguments[0], arguments[1]);"
            "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
            boxes[0],
            text,
        )

    def inner_text(self, elem_id: str) -> str:
        """The text shown by the element with this id ("" when there is none)."""
        return self.driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';", elem_id
        )

    def dropdown_value(self) -> str:
        """The text the first visible dropdown shows."""
        from selenium.webdriver.common.by import By

        inputs = [
            i
            for i in self.driver.find_elements(By.CSS_SELECTOR, "input[role='listbox'], .wrap input")
            if i.is_displayed()
        ]
        return inputs[0].get_attribute("value") if inputs else ""
