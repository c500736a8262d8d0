"""`mft app` in a real browser: the command is started as a subprocess on a free localhost port with the
session's tiny folders, and Debian's chromium, driven by Playwright, uses every tab as a person would.
Screenshots of each tab go to test-artifacts/app/ (or $MFT_TEST_ARTIFACTS).

Without playwright or /usr/bin/chromium the test is skipped, except under CI=true, where it fails: CI
installs both (the README's test command)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import snapshot

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MFT_TEST_ARTIFACTS", REPO / "test-artifacts")) / "app"
START_TIMEOUT_S = 120


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install playwright)"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="module")
def browser_ready():
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the browser test cannot run: {missing}")
        pytest.skip(missing)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(app_folders, browser_ready, tmp_path_factory):
    """`python -m mft_engine.cli app --models RUN FINETUNE EXPORT --port P`, its URL once it answers."""
    port = _free_port()
    cwd = tmp_path_factory.mktemp("app_cwd")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = (cwd / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mft_engine.cli", "app", "--models", str(app_folders.run),
                             str(app_folders.finetune), str(app_folders.export), "--port", str(port)],
                            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mft app exited with {proc.returncode}:\n{(cwd / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mft app did not answer on {url} within {START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()  # the CLI turns SIGTERM into a clean shutdown
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_every_tab_in_a_real_browser(server, app_folders, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    before = snapshot(app_folders.run, app_folders.finetune, app_folders.export)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("sentence,label\ntrès bien,1\n".encode("latin-1"))
    big = tmp_path / "big.csv"
    big.write_bytes(b"sentence,label\n" + b"a fine film indeed,1\n" * (10 * 2**20 // 21))
    hosts: set[str] = set()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
            page.goto(server, wait_until="load")

            def tab(name: str) -> None:
                page.get_by_role("tab", name=name).first.click()

            def shot(name: str) -> None:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

            # Models: every preloaded model listed; a folder that is no model is refused in the page
            expect(page.locator("#models_table")).to_contain_text("mask 10%")
            expect(page.locator("#models_table")).to_contain_text("lora merged")
            page.locator("#models_folder textarea, #models_folder input").first.fill(str(tmp_path))
            page.locator("#models_add").click()
            expect(page.locator("#models_status")).to_contain_text("neither a results folder")
            shot("models_bad_folder")

            # Try it: label and confidence read from the page
            tab("Try it")
            page.locator("#try_text textarea").fill("a gripping, beautifully acted film")
            page.locator("#try_run").click()
            headline = page.locator("#try_result h3")
            headline.wait_for()
            label = headline.inner_text().strip()
            assert label in ("negative", "positive")
            result = page.locator("#try_result").inner_text()
            conf = float(result.split("confidence")[1].split("%")[0])
            assert 50.0 <= conf <= 100.0, result
            expect(page.locator("#try_probs")).to_contain_text("negative")
            expect(page.locator("#try_counts")).to_contain_text("4,386,178")
            shot("try_it")
            page.locator("#try_text textarea").fill("x" * 100_000)
            page.locator("#try_run").click()
            expect(page.locator("#try_status")).to_contain_text("100,000 characters")
            shot("try_it_too_long")

            # Batch: a small CSV → accuracy; bad files → errors in the page
            tab("Batch")
            page.locator("#batch_file input[type=file]").set_input_files(str(app_folders.good_csv))
            expect(page.locator("#batch_label_col input")).to_have_value("label")
            page.locator("#batch_run").click()
            expect(page.locator("#batch_metrics")).to_contain_text("accuracy")
            metrics = page.locator("#batch_metrics").inner_text()
            accuracy = float(metrics.split("accuracy")[1].split()[0])
            assert accuracy in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), metrics  # 5 rows
            expect(page.locator("#batch_table")).to_contain_text("dull and slow")
            expect(page.locator("#batch_download")).to_contain_text("predictions_")
            shot("batch")
            for bad, words in ((empty, "is empty"), (latin, "not UTF-8"), (big, "MiB")):
                page.locator('#batch_file button[aria-label="Clear"]').click()  # as a user replaces a file
                page.locator("#batch_file input[type=file]").set_input_files(str(bad))
                expect(page.locator("#batch_status")).to_contain_text(words)
                # the last file's figures are gone: none stands under a file it was not made from
                expect(page.locator("#batch_metrics")).not_to_contain_text("accuracy")
                expect(page.locator("#batch_table")).not_to_contain_text("dull and slow")
                if bad is latin:
                    shot("batch_not_utf8")
            page.locator("#batch_run").click()
            expect(page.locator("#batch_status")).to_contain_text("MiB")
            shot("batch_too_big")

            # Inspect: the run's heatmap and curve
            tab("Inspect")
            page.locator("#inspect_path textarea, #inspect_path input").first.fill(str(app_folders.run))
            page.locator("#inspect_open").click()
            heatmap = page.locator("#inspect_heatmap img")
            heatmap.wait_for()
            box = heatmap.bounding_box()
            assert box is not None and box["width"] > 600, box
            record = json.loads((Path(app_folders.run) / "results.json").read_text())
            zeroed = {f["fraction"]: f["k"] for f in record["fractions"]}
            expect(page.locator("#inspect_summary")).to_contain_text(f"{zeroed[0.1]:,}")
            page.locator("#inspect_curves img").wait_for()
            shot("inspect")
            page.locator("#inspect_path textarea, #inspect_path input").first.fill(str(tmp_path))
            page.locator("#inspect_open").click()
            expect(page.locator("#inspect_status")).to_contain_text("neither a results folder")
            shot("inspect_bad_folder")

            # Compare: two models on one text and on one CSV
            tab("Compare")
            page.locator("#cmp_text textarea").fill("dull and slow")
            page.locator("#cmp_text_run").click()
            expect(page.locator("#cmp_result")).to_contain_text("latency b − a")
            shot("compare_text")
            page.locator("#cmp_file input[type=file]").set_input_files(str(app_folders.good_csv))
            expect(page.locator("#cmp_text_col input")).to_have_value("sentence")
            page.locator("#cmp_csv_run").click()
            expect(page.locator("#cmp_result")).to_contain_text("agreement")
            expect(page.locator("#cmp_result")).to_contain_text("b − a")
            shot("compare_csv")

            # after all the bad input the app still answers
            tab("Try it")
            page.locator("#try_text textarea").fill("quietly moving")
            page.locator("#try_run").click()
            expect(page.locator("#try_status")).to_have_text("")
            expect(page.locator("#try_result")).to_contain_text("confidence")
        finally:
            browser.close()

    assert hosts and all(h.split(":")[0] == "127.0.0.1" for h in hosts), hosts  # no outside calls
    assert snapshot(app_folders.run, app_folders.finetune, app_folders.export) == before
