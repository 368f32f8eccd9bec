"""The page ``enfold serve`` answers ``GET /`` with: served as package data, self-contained, and
used for real in headless chromium (driven by selenium) against servers on loopback."""

from __future__ import annotations

import io
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from test_serve import serving
from tiny_runs import train_tiny

from enfold.runtime.images import encode_png
from enfold.runtime.page import page_html

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = "`make browser` installs them (Debian: apt-get install chromium chromium-driver)"
WAIT_S = 60  # a tiny model answers in well under a second; the rest is slack for busy cores
UPLOAD_HW = (16, 24)  # not square and not a multiple of the 8-pixel tiles: the server tiles it


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A tiny pretrain checkpoint (restore, energy; task mask) and the classifier fine-tuned
    from it, each served by the real ``enfold serve`` on a free loopback port."""
    root = tmp_path_factory.mktemp("page")
    runs = train_tiny(root)
    specs = {"restorer": (runs["pretrain"], {}), "classifier": (runs["finetune"], {})}
    yield from serving(specs, root, "page")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless chromium under chromedriver, downloads going to ``browser.download_dir``;
    skips, saying what to install, where selenium, chromium or chromedriver is missing."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed: pip install 'enfold[dev]'")
    from selenium.webdriver.chrome.service import Service

    binary = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        missing = " and ".join(name for name, path in [("chromium", binary),
                                                        ("chromedriver", driver_path)]
                               if path is None)
        pytest.skip(f"{missing} not found on PATH: {INSTALL_HINT}")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--window-size=1000,900"):
        options.add_argument(arg)
    if os.geteuid() == 0:  # chromium refuses to run as root inside its sandbox
        options.add_argument("--no-sandbox")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    driver.download_dir = downloads
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, what: str, timeout: float = WAIT_S):
    """``condition(driver)`` once truthy, else fail naming ``what`` and any error on the page."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(condition)
    except TimeoutException:
        error = driver.find_element("id", "error")
        raise AssertionError(f"the page did not show {what} in {timeout} s; its error box: "
                             f"{error.text!r}, status: "
                             f"{driver.find_element('id', 'status').text!r}") from None


def open_page(driver, url: str) -> None:
    driver.get(f"{url}/")
    wait_for(driver, lambda d: d.find_element("id", "model").text.startswith("Model:"),
             "the model's metadata")


def visible(driver, element_id: str) -> bool:
    return driver.find_element("id", element_id).is_displayed()


def write_png(path: Path, img: torch.Tensor) -> Path:
    path.write_bytes(encode_png(img))
    return path


# ----------------------------------------------------------------------------- no browser


def test_page_is_served_from_package_data_and_self_contained(servers):
    response = httpx.get(f"{servers['restorer']}/", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == page_html()
    # everything inline: no script, style sheet or image from another host (works offline)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", response.text)
    assert not re.search(r"<link\b|<script\b[^>]*\bsrc=|@import", response.text)
    assert "connect-src 'self'" in response.headers["content-security-policy"]
    # a page, not API: the fuzz test and clients read the schema
    schema = httpx.get(f"{servers['restorer']}/openapi.json", timeout=10).json()
    assert "/" not in schema["paths"]


# ----------------------------------------------------------------------------- in chromium


def test_page_restores_an_upload_and_offers_the_png(browser, servers, tmp_path):
    h, w = UPLOAD_HW
    image = write_png(tmp_path / "photo.png",
                      torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)))
    mask = torch.zeros(1, h, w)
    mask[:, 4:12, 8:16] = 1  # white = missing
    mask_file = write_png(tmp_path / "holes.png", mask.expand(3, h, w))
    open_page(browser, servers["restorer"])
    # the served model is a mask restorer: its task is chosen and its option (a mask) offered
    assert browser.find_element("id", "task").get_attribute("value") == "mask"
    assert visible(browser, "mask") and not visible(browser, "sigma")
    assert not visible(browser, "action-field")  # restore is all it offers
    assert not visible(browser, "classify-options")
    browser.find_element("id", "file").send_keys(str(image))
    browser.find_element("id", "mask").send_keys(str(mask_file))
    browser.find_element("id", "run").click()

    result = browser.find_element("id", "output-img")
    wait_for(browser, lambda d: visible(d, "result") and d.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", result), "a result image")
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                  result) == [w, h]
    assert visible(browser, "input-img") and not visible(browser, "error")

    # the link offers the very image shown: the same blob: URL
    link = browser.find_element("id", "download")
    assert link.get_attribute("href") == result.get_attribute("src")
    assert link.get_attribute("download") == "photo-restored.png"
    link.click()
    saved = browser.download_dir / "photo-restored.png"
    deadline = time.monotonic() + WAIT_S
    while not saved.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert saved.exists(), f"no download in {WAIT_S} s: {list(browser.download_dir.iterdir())}"
    data = saved.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    downloaded = Image.open(io.BytesIO(data))
    assert downloaded.format == "PNG" and downloaded.size == (w, h)

    # a clean image degraded by the server first: the server measures both and the page says so
    browser.find_element("id", "simulate").click()
    assert visible(browser, "seed")
    browser.find_element("id", "run").click()
    psnr = wait_for(browser, lambda d: d.find_element("id", "psnr").text, "the PSNR")
    assert re.fullmatch(r"PSNR on the corrupted region: degraded [\d.]+ dB, "
                        r"restored [\d.]+ dB\.", psnr)


def test_page_shows_the_servers_reason_for_a_refusal(browser, servers, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these are notes, not an image")
    refused = httpx.post(f"{servers['restorer']}/v1/restore",
                         files={"file": ("notes.png", bad.read_bytes())},
                         data={"degraded": "true"}, timeout=30)
    assert refused.status_code == 415
    open_page(browser, servers["restorer"])
    browser.find_element("id", "file").send_keys(str(bad))
    browser.find_element("id", "run").click()
    wait_for(browser, lambda d: visible(d, "error"), "an error")
    text = browser.find_element("id", "error").text
    assert text.startswith("The server refused (415")
    assert refused.json()["detail"] in text
    assert not visible(browser, "result")


def test_page_classifies_with_a_classifier(browser, servers, tmp_path):
    from enfold.data.sources import DigitsSource

    digit = write_png(tmp_path / "digit.png", DigitsSource("test", 8).image(0))
    expected = httpx.post(f"{servers['classifier']}/v1/classify",
                          files={"file": ("digit.png", digit.read_bytes())},
                          data={"top_k": "3"}, timeout=30).json()["top_k"]
    open_page(browser, servers["classifier"])
    assert browser.find_element("id", "action").get_attribute("value") == "classify"
    assert not visible(browser, "restore-options") and visible(browser, "top_k")
    top_k = browser.find_element("id", "top_k")
    top_k.clear()
    top_k.send_keys("3")
    browser.find_element("id", "file").send_keys(str(digit))
    browser.find_element("id", "run").click()
    wait_for(browser, lambda d: len(d.find_elements("css selector", "#topk li")) == 3,
             "three classes")
    shown = [li.text for li in browser.find_elements("css selector", "#topk li")]
    assert [line.split(":")[0] for line in shown] == [str(row["label"]) for row in expected]
    assert not visible(browser, "output-figure")
