"""The index site in a real browser: headless Chromium driven by selenium.

The daemon runs as a user runs it (``twistd -n imsp2p --role=index`` in a
subprocess) on a catalogue of two listed assets; the browser loads the
catalogue, an asset page, the dashboard and the genre filter, checks the
purchase links carry the right ``sip:`` URIs, downloads the .torrent, and
finds no error in the browser's console (a CSP violation or a missing
resource would be one). Needs the Debian packages chromium and
chromium-driver and the PyPI package selenium.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.content.catalogue import MIGRATIONS, AssetState, Catalogue, parse_metadata
from imsp2pd.store import SQLiteStore

BIN = Path(sys.executable).parent
PSI = "sip:content@ims.example.org"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TITLES = {
    "10.5555/night-train": ("Night Train", "drama"),
    "10.5555/cats": ('Cats <script>alert("x")</script> & Dogs', "comedy"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _skip_reason() -> str | None:
    if CHROMIUM is None:
        return "chromium is not installed (Debian package chromium)"
    if CHROMEDRIVER is None:
        return "chromedriver is not installed (Debian package chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (PyPI package selenium)"
    return None


class IndexInChromiumTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        reason = _skip_reason()
        if reason:
            raise SkipTest(reason)
        self.dir = Path(self.mktemp()).resolve()
        (self.dir / "etc").mkdir(parents=True)
        self.control = free_port()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = self.dir / "etc" / "imsp2pd.toml"
        config.write_text(
            '[daemon]\nstate_dir = "../var"\n'
            f'[admin]\nlisten = "tcp:{self.control}:interface=127.0.0.1"\n'
            f'url = "http://127.0.0.1:{self.control}"\ntoken = "t0k"\n'
            f'[index]\nlisten = "127.0.0.1:{self.port}"\nurl = "{self.base}"\n'
            "scrape_interval = 2.0\nscrape_timeout = 1.0\n"
        )
        self.torrents = self.make_catalogue(self.dir / "var" / "imsp2pd.sqlite")
        env = dict(os.environ, IMSP2P_CONFIG=str(config))
        self.daemon = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "imsp2p", "--role=index"],
            cwd=self.dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(self.stop_daemon)
        self.wait_for_site()
        self.downloads = Path(tempfile.mkdtemp(dir=self.dir))
        self.driver = self.start_browser()
        self.addCleanup(self.driver.quit)

    def make_catalogue(self, path: Path) -> dict[str, bytes]:
        store = SQLiteStore(path)
        store.migrate(MIGRATIONS)
        cat = Catalogue(store, time.time)
        down = f"http://127.0.0.1:{free_port()}"  # no tracker there: health is unknown
        torrents = {}
        for doi, (title, genre) in TITLES.items():
            f = self.dir / doi.split("/")[1]
            f.write_bytes(title.encode() * 3000)
            t = make_metainfo(f, f"{down}/announce", doi=doi).to_bytes()
            meta = parse_metadata(
                {
                    "title": title,
                    "description": f"About {title}.",
                    "genre": genre,
                    "offers": [
                        {"id": "rent", "price": "2.50", "currency": "EUR", "rights": {"plays": 3}},
                        {"id": "buy", "price": "9.99", "currency": "EUR", "rights": {"plays": 100}},
                    ],
                }
            )
            d = cat.add(
                meta,
                publisher="sip:carol@ims.example.org",
                torrent=t,
                tracker=down,
                state=AssetState.LISTED,
            )
            results: list[Any] = []
            d.addBoth(results.append)
            assert results and not hasattr(results[0], "raiseException"), results
            torrents[doi] = t
        store.close()
        return torrents

    def stop_daemon(self) -> None:
        if self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(5)
        assert self.daemon.stdout is not None
        self.daemon.stdout.close()

    def wait_for_site(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                assert self.daemon.stdout is not None
                self.fail(f"daemon exited: {self.daemon.stdout.read().decode()}")
            try:
                with urllib.request.urlopen(self.base + "/api/assets", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.fail("the index did not come up")

    def start_browser(self) -> Any:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=self.dir)}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(self.downloads),
                "download.prompt_for_download": False,
                "safebrowsing.enabled": False,
            },
        )
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        driver.set_page_load_timeout(30)
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(self.downloads)},
        )
        return driver

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def test_the_site_in_chromium(self) -> None:
        from selenium.webdriver.common.by import By

        d = self.driver
        errors: list[str] = []

        # the catalogue: both assets, titles shown as text, not run
        d.get(self.base + "/")
        self.assertIn("Catalogue", d.title)
        titles = [a.text for a in d.find_elements(By.CSS_SELECTOR, "li.asset a.title")]
        self.assertEqual(sorted(titles), sorted(t for t, _ in TITLES.values()))
        self.assertEqual(d.find_elements(By.TAG_NAME, "script"), [])
        # the stylesheet loaded (CSP allows 'self'): the header is dark
        header_bg = d.find_element(By.TAG_NAME, "header").value_of_css_property("background-color")
        self.assertEqual(header_bg, "rgba(17, 34, 51, 1)")
        errors += self.console_errors()

        # the genre filter
        d.find_element(By.LINK_TEXT, "comedy (1)").click()
        titles = [a.text for a in d.find_elements(By.CSS_SELECTOR, "li.asset a.title")]
        self.assertEqual(titles, [TITLES["10.5555/cats"][0]])
        errors += self.console_errors()

        # an asset page, reached by its link
        d.find_element(By.CSS_SELECTOR, "li.asset a.title").click()
        self.assertEqual(d.find_element(By.TAG_NAME, "h1").text, TITLES["10.5555/cats"][0])
        buys = d.find_elements(By.CSS_SELECTOR, "a.buy")
        self.assertEqual(
            [b.get_dom_attribute("href") for b in buys],
            [f"{PSI};doi=10.5555/cats;offer=rent", f"{PSI};doi=10.5555/cats;offer=buy"],
        )
        self.assertEqual(
            [b.get_attribute("href") for b in buys],
            [f"{PSI};doi=10.5555/cats;offer=rent", f"{PSI};doi=10.5555/cats;offer=buy"],
        )
        self.assertIn("Swarm health: unknown", d.find_element(By.CSS_SELECTOR, "p.health").text)
        prices = [p.text for p in d.find_elements(By.CSS_SELECTOR, "td.price")]
        self.assertEqual(prices, ["2.50 EUR", "9.99 EUR"])
        errors += self.console_errors()

        # the .torrent link downloads the exact bytes
        d.find_element(By.CSS_SELECTOR, "a.torrent").click()
        deadline = time.monotonic() + 20
        got: list[Path] = []
        while time.monotonic() < deadline:
            got = [p for p in self.downloads.iterdir() if p.suffix == ".torrent"]
            if got:
                break
            time.sleep(0.1)
        self.assertEqual(len(got), 1, f"downloads: {list(self.downloads.iterdir())}")
        self.assertEqual(got[0].read_bytes(), self.torrents["10.5555/cats"])
        errors += self.console_errors()

        # the dashboard: one chart per swarm, drawn
        d.get(self.base + "/dashboard")
        charts = d.find_elements(By.CSS_SELECTOR, "svg.chart")
        self.assertEqual(len(charts), 2)
        self.assertGreater(charts[0].size["width"], 100)
        errors += self.console_errors()

        self.assertEqual(errors, [])
