"""The web page at ``/`` in a real browser: Debian's headless Chromium driven by Selenium,
against the real service. Uploads through the page's file input, follows the job live,
downloads the archive and saves a screenshot in the test's tmp dir (with
QUIRE_UPDATE_SCREENSHOT=1 also as ``docs/screenshot-web.png``, shown in the README).
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy.orm import Session

from app.db import make_engine
from app.jobs import JobSpec, create_job, new_job_id
from app.zipinput import DocxEntry
from tests.conftest import CORPUS
from tests.docx_factory import OLE2_HEADER, make_docx, make_zip
from tests.e2e.conftest import REPO, Service
from tests.e2e.helpers import OldServerProxy, proxy_to
from tests.pdf import pdf_pages

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = REPO / "docs" / "screenshot-web.png"

GOOD = {
    "reports/annual-2025.docx": make_docx("Annual report 2025", "Appendix"),
    "reports/q3-summary.docx": make_docx("Third quarter summary"),
    "letters/welcome.docx": make_docx("Welcome to Quire"),
    "letters/καλημέρα.docx": make_docx("Καλημέρα κόσμε"),
    "corpus/tables.docx": (CORPUS / "pandoc/test__docx__tables.docx").read_bytes(),
    "corpus/comments.docx": (CORPUS / "pandoc/test__docx__comments.docx").read_bytes(),
}
BAD = {
    "bad/notes.docx": b"Meeting notes, saved as plain text and renamed.\n" * 10,
    "bad/old-format.docx": OLE2_HEADER + b"\x00" * 2048,
    "corpus/encrypted.docx": (
        CORPUS / "encrypted/tests__inputs__example_password.docx"
    ).read_bytes(),
}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[tuple[WebDriver, Path]]:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = Options()
    # Debian's own Chromium and driver, named outright: Selenium Manager would otherwise try
    # to download a browser, and this machine reaches no such site.
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    try:
        yield driver, downloads
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], object], timeout: float) -> None:
    WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def rows_by_name(driver: WebDriver) -> dict[str, tuple[str, str]]:
    """The page's file list: name -> (status shown, message shown)."""
    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#files tbody tr"):
        name, status, message = (cell.text for cell in row.find_elements(By.TAG_NAME, "td"))
        rows[name] = (status, message)
    return rows


def wait_for_download(folder: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Chromium writes into a hidden temporary (.org.chromium.Chromium.*) or a .crdownload
        # file first, then renames it: only a visible, final name is a finished download.
        done = [
            p
            for p in folder.iterdir()
            if not p.name.startswith(".") and not p.name.endswith(".crdownload")
        ]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"nothing was downloaded into {folder}")


def test_the_page_uploads_a_zip_follows_the_job_and_downloads_the_pdfs(
    make_service: Callable[[dict[str, str]], Service],
    browser: tuple[WebDriver, Path],
    tmp_path: Path,
) -> None:
    service = make_service({"QUIRE_WORKER_CONCURRENCY": "2", "QUIRE_SECRET_KEY": "web"})
    service.start()
    driver, downloads = browser
    batch = tmp_path / "batch.zip"
    batch.write_bytes(make_zip(GOOD | BAD))

    driver.get(f"{service.url}/")
    assert driver.title.startswith("Quire")
    # The hidden-looking input is the real one behind the drop zone: a file path typed into it
    # is what a person's choice in the file dialog amounts to.
    driver.find_element(By.ID, "file-input").send_keys(str(batch))

    wait_for(driver, lambda d: d.find_element(By.ID, "job").is_displayed(), 60)
    status = driver.find_element(By.ID, "job-status")
    wait_for(driver, lambda _: status.text in ("COMPLETED", "FAILED"), 300)
    assert status.text == "COMPLETED"
    # The live list came from the event stream, not from polling.
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-followed-by") == "events"
    download = driver.find_element(By.ID, "download")
    wait_for(driver, lambda _: download.is_displayed(), 30)

    # What a person sees: the upload done, every file with its status, each failure's reason.
    assert driver.find_element(By.ID, "upload-bar").get_attribute("aria-valuenow") == "100"
    assert "Uploaded" in driver.find_element(By.ID, "upload-text").text
    rows = rows_by_name(driver)
    assert set(rows) == set(GOOD) | set(BAD)
    for name in GOOD:
        if not name.startswith("corpus/"):
            assert rows[name] == ("COMPLETED", ""), name
    # The two Word documents ask for Calibri (and Cambria): their font reports, in short.
    assert rows["corpus/comments.docx"] == ("COMPLETED", "Calibri → Carlito"), rows
    assert rows["corpus/tables.docx"][0] == "COMPLETED"
    assert set(rows["corpus/tables.docx"][1].split(" · ")) == {
        "Calibri → Carlito",
        "Cambria → Caladea",
    }
    fonts = driver.find_element(By.ID, "job-fonts")
    assert fonts.is_displayed()
    assert fonts.text == "Fonts: 2 files with substituted fonts · 0 with missing fonts"
    for name in BAD:
        assert rows[name][0] == "FAILED", name
        assert rows[name][1], name
    assert "not a zip package" in rows["bad/notes.docx"][1]
    assert "password-protected" in rows["corpus/encrypted.docx"][1]
    # Each converted file links to its own PDF; a failed one has nothing to link to.
    links = {
        a.text: a.get_attribute("href")
        for a in driver.find_elements(By.CSS_SELECTOR, "#files td.name a")
    }
    assert set(links) == set(GOOD)
    pdf = httpx.get(str(links["reports/annual-2025.docx"]), follow_redirects=True, timeout=30)
    assert "Annual report 2025" in pdf_pages(pdf.content)[0]
    overall = driver.find_element(By.ID, "overall-bar")
    assert overall.get_attribute("aria-valuenow") == "100"
    counts = driver.find_element(By.ID, "overall-text").text
    assert f"{len(GOOD) + len(BAD)} of {len(GOOD) + len(BAD)} files finished" in counts
    assert f"{len(GOOD)} converted" in counts and f"{len(BAD)} failed" in counts
    assert download.text.startswith(f"Download {len(GOOD)} PDFs")
    # The API agrees with the page.
    job_id = driver.find_element(By.ID, "job-id").text
    job = httpx.get(f"{service.url}/api/v1/jobs/{job_id}", timeout=30).json()
    assert job["progress"]["failed"] == len(BAD)

    # The screenshot shows the whole page as it is now, failures included.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1200, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
    )
    assert driver.save_screenshot(str(tmp_path / "screenshot-web.png"))
    if os.environ.get("QUIRE_UPDATE_SCREENSHOT"):
        # Only when asked: a test run must not change tracked files.
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "screenshot-web.png", SCREENSHOT)

    download.click()
    saved = wait_for_download(downloads)
    assert saved.name == f"quire-{job_id}.zip"
    with zipfile.ZipFile(saved) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
        assert names == {name[: -len(".docx")] + ".pdf" for name in GOOD}
        assert "Annual report 2025" in pdf_pages(archive.read("reports/annual-2025.pdf"))[0]
        assert "Καλημέρα κόσμε" in pdf_pages(archive.read("letters/καλημέρα.pdf"))[0]


def test_docx_files_with_an_api_key_and_the_refusals_on_the_way(
    make_service: Callable[[dict[str, str]], Service],
    browser: tuple[WebDriver, Path],
    tmp_path: Path,
) -> None:
    service = make_service(
        {"QUIRE_WORKER_CONCURRENCY": "1", "QUIRE_SECRET_KEY": "web", "QUIRE_API_KEYS": "k-123"}
    )
    service.start()
    driver, downloads = browser
    documents = {"minutes.docx": make_docx("Minutes"), "agenda.docx": make_docx("Agenda")}
    paths = []
    for name, data in (documents | {"scan.docx": b"not really a document"}).items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    nothing = tmp_path / "nothing.zip"
    nothing.write_bytes(make_zip({"readme.txt": b"no documents here"}))

    driver.get(f"{service.url}/")
    chooser = driver.find_element(By.ID, "file-input")
    error = driver.find_element(By.ID, "error")

    chooser.send_keys(paths[0])  # no key yet
    wait_for(driver, lambda _: error.is_displayed(), 60)
    assert error.text.startswith("401: This server needs an API key")

    driver.find_element(By.CSS_SELECTOR, "#options summary").click()
    key = driver.find_element(By.ID, "api-key")
    key.send_keys("wrong")
    chooser.send_keys(paths[0])
    wait_for(driver, lambda _: error.text.startswith("403:"), 60)

    key.clear()
    key.send_keys("k-123")
    chooser.send_keys(str(nothing))
    wait_for(driver, lambda _: error.text.startswith("400:"), 60)
    assert ".docx" in error.text
    assert driver.find_element(By.ID, "drop").is_displayed()
    assert not driver.find_element(By.ID, "job").is_displayed()

    # Several DOCX files at once (the repeated field 'files'); the key goes with every call,
    # the event stream included, and the download goes through the API with it.
    chooser.send_keys("\n".join(paths))
    status = driver.find_element(By.ID, "job-status")
    wait_for(driver, lambda _: status.text in ("COMPLETED", "FAILED"), 300)
    assert not error.is_displayed()
    rows = rows_by_name(driver)
    assert rows["minutes.docx"] == rows["agenda.docx"] == ("COMPLETED", "")
    assert rows["scan.docx"][0] == "FAILED" and "not a zip package" in rows["scan.docx"][1]
    assert driver.find_element(By.ID, "overall-bar").get_attribute("aria-valuenow") == "100"
    job_id = driver.find_element(By.ID, "job-id").text
    download = driver.find_element(By.ID, "download")
    wait_for(driver, lambda _: download.is_displayed(), 30)
    download.click()
    saved = wait_for_download(downloads)
    assert saved.name == f"quire-{job_id}.zip"
    with zipfile.ZipFile(saved) as archive:
        assert set(archive.namelist()) == {"minutes.pdf", "agenda.pdf"}

    # The key is remembered by this tab, for its session only: not on disk in localStorage.
    driver.refresh()
    assert driver.find_element(By.ID, "api-key").get_attribute("value") == "k-123"
    assert driver.execute_script("return sessionStorage.getItem('quire.apiKey')") == "k-123"
    assert driver.execute_script("return localStorage.getItem('quire.apiKey')") is None


def test_the_api_documentation_renders_from_quire_s_own_assets(
    make_service: Callable[[dict[str, str]], Service],
    browser: tuple[WebDriver, Path],
) -> None:
    # Under a policy of scripts from this origin only: had a script been refused, nothing
    # would render.
    service = make_service({"QUIRE_WORKER_CONCURRENCY": "1", "QUIRE_SECRET_KEY": "web"})
    service.start()
    driver, _ = browser
    driver.get(f"{service.url}/docs")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"), 60)
    paths = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert "/api/v1/jobs" in paths
    driver.get(f"{service.url}/redoc")
    wait_for(driver, lambda d: "Submit DOCX files for conversion" in d.page_source, 60)


def test_without_the_event_stream_the_page_polls(
    make_service: Callable[[dict[str, str]], Service],
    browser: tuple[WebDriver, Path],
    tmp_path: Path,
) -> None:
    service = make_service({"QUIRE_WORKER_CONCURRENCY": "1", "QUIRE_SECRET_KEY": "web"})
    service.start()
    driver, _ = browser
    batch = tmp_path / "batch.zip"
    batch.write_bytes(make_zip({"a.docx": make_docx("A"), "b.docx": b"plain text"}))
    # A proxy in front of the service that refuses event streams, as some proxies do.
    with proxy_to(service.url, OldServerProxy) as url:
        driver.get(f"{url}/")
        driver.find_element(By.ID, "file-input").send_keys(str(batch))
        status = driver.find_element(By.ID, "job-status")
        wait_for(driver, lambda _: status.text in ("COMPLETED", "FAILED"), 300)
        body = driver.find_element(By.TAG_NAME, "body")
        assert body.get_attribute("data-followed-by") == "polling"
        assert status.text == "COMPLETED"
        rows = rows_by_name(driver)
        assert rows["a.docx"] == ("COMPLETED", "")
        assert rows["b.docx"][0] == "FAILED" and "not a zip package" in rows["b.docx"][1]
        assert driver.find_element(By.ID, "overall-bar").get_attribute("aria-valuenow") == "100"
        assert driver.find_element(By.ID, "download").is_displayed()


def test_at_a_full_quota_the_page_says_why_and_submits_when_a_slot_frees(
    make_service: Callable[[dict[str, str]], Service],
    browser: tuple[WebDriver, Path],
    tmp_path: Path,
) -> None:
    service = make_service(
        {
            "QUIRE_WORKER_CONCURRENCY": "1",
            "QUIRE_SECRET_KEY": "web",
            "QUIRE_MAX_ACTIVE_JOBS_PER_KEY": "1",
        }
    )
    service.start()
    driver, _ = browser
    # The one slot is taken by a job that no worker is told about, so it stays PENDING until
    # the test cancels it: made in the service's own database, as a submission makes it.
    held = new_job_id()
    engine = make_engine(f"sqlite:///{service.data_dir / 'quire.db'}")
    with Session(engine) as session, session.begin():
        entry = DocxEntry(index=0, name="held.docx", info=zipfile.ZipInfo("held.docx"))
        create_job(session, JobSpec(held, upload_bytes=1), [entry])
    engine.dispose()
    document = tmp_path / "memo.docx"
    document.write_bytes(make_docx("Memo"))

    driver.get(f"{service.url}/")
    driver.find_element(By.ID, "file-input").send_keys(str(document))
    notice = driver.find_element(By.ID, "quota-wait")
    wait_for(driver, lambda _: notice.is_displayed(), 60)
    # Why it cannot submit yet, in the server's words, and when it tries again.
    reason = driver.find_element(By.ID, "quota-message").text
    assert reason.startswith("Quota reached: 1 active job of 1 allowed on this server")
    assert "Trying again in" in driver.find_element(By.ID, "quota-countdown").text
    assert driver.find_element(By.ID, "upload-verb").text == "Waiting to upload"
    assert not driver.find_element(By.ID, "error").is_displayed()
    body = driver.find_element(By.TAG_NAME, "body")
    assert body.get_attribute("data-quota-refusals") == "1"

    # "Try now" while the slot is still taken: refused again, and still said so.
    driver.find_element(By.ID, "quota-now").click()
    wait_for(driver, lambda _: body.get_attribute("data-quota-refusals") == "2", 60)
    assert notice.is_displayed() and not driver.find_element(By.ID, "job").is_displayed()

    # The held job ends: the page's next attempt (its countdown) gets the job through.
    cancelled = httpx.post(f"{service.url}/api/v1/jobs/{held}/cancel", timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    status = driver.find_element(By.ID, "job-status")
    wait_for(driver, lambda _: status.text in ("COMPLETED", "FAILED"), 300)
    assert status.text == "COMPLETED"
    assert not notice.is_displayed()
    assert body.get_attribute("data-quota-refusals") == "2"
    assert rows_by_name(driver) == {"memo.docx": ("COMPLETED", "")}


def test_the_page_sends_doc_rtf_and_odt_files(
    make_service: Callable[[dict[str, str]], Service],
    browser: tuple[WebDriver, Path],
    legacy_documents: dict[str, Path],
) -> None:
    service = make_service({"QUIRE_WORKER_CONCURRENCY": "1"})
    service.start()
    driver, _ = browser
    driver.get(f"{service.url}/")
    chooser = driver.find_element(By.ID, "file-input")
    # The file picker offers them...
    accepted = (chooser.get_attribute("accept") or "").split(",")
    assert {".docx", ".doc", ".rtf", ".odt"} <= set(accepted)
    # ...and the page sends them as 'files' parts, each converted.
    chooser.send_keys("\n".join(str(legacy_documents[kind]) for kind in ("doc", "rtf", "odt")))
    status = driver.find_element(By.ID, "job-status")
    wait_for(driver, lambda _: status.text in ("COMPLETED", "FAILED"), 300)
    assert not driver.find_element(By.ID, "error").is_displayed()
    rows = rows_by_name(driver)
    assert {name: status for name, (status, _) in rows.items()} == dict.fromkeys(
        ("source.doc", "source.rtf", "source.odt"), "COMPLETED"
    )
    # Each kind has its font report: the corpus document asks for Calibri and Cambria.
    for name, (_, notes) in rows.items():
        assert set(notes.split(" · ")) == {"Calibri → Carlito", "Cambria → Caladea"}, name
