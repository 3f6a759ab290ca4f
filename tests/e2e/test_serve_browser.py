"""`dlab serve` as a user meets it: a real uvicorn process, its page driven in headless Chromium."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from dlab.serve.process import serving

SHOTS = Path(os.environ.get("DLAB_SCREENSHOTS", "")) if os.environ.get("DLAB_SCREENSHOTS") else None


@pytest.fixture
def server(image_run):
    with serving(image_run.path) as url:
        yield url


def open_page(p, chromium: str, url: str, errors: list[str], height: int = 700):
    """A headless Chromium page at `url` whose console errors and exceptions land in `errors`."""
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 900, "height": height})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return browser, page


def stroke(page, points: list[tuple[float, float]]) -> None:
    """Drag the mouse through `points` (fractions of the canvas) with the button held."""
    box = page.locator("#pad").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def test_draw_a_digit_and_see_its_probabilities(server, chromium, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser, page = open_page(p, chromium, server, errors)
        page.wait_for_selector("#image-panel:not(.hidden)")
        assert "mnist_cnn" in page.inner_text("#subtitle")
        stroke(page, [(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)])  # a one: a single upright stroke
        page.click("#predict")
        page.wait_for_function("document.querySelector('#result').textContent.length > 0")
        label = page.inner_text("#result")
        values = page.locator("#bars .bar .value").all_inner_texts()
        shares = [float(v.rstrip("%")) for v in values]
        shot = (SHOTS or tmp_path) / "serve-page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)

        stroke(page, [(0.3, 0.3), (0.7, 0.7)])  # the page also handles a second drawing
        page.click("#clear")
        assert page.inner_text("#result") == ""
        browser.close()
    assert not errors, errors
    assert label == "1", f"a vertical stroke read as {label}"
    assert len(shares) == 5  # the top five classes
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.5
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20  # the canvas, the stroke and the bars rendered


def status_of_an_upload_declaring(server: str, length: int) -> int:
    """The status a server answers to a POST that declares `length` bytes and sends a few."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(server)
    with socket.create_connection((where.hostname, where.port), timeout=30) as connection:
        connection.sendall(
            f"POST /predict HTTP/1.1\r\nHost: {where.hostname}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()
            + b"x" * 1000
        )
        first_line = connection.makefile("rb").readline().decode()
    return int(first_line.split()[1])  # HTTP/1.1 413 Content Too Large


def test_the_server_stays_up_through_bad_requests(server):
    bad = [
        {"content": b"{", "headers": {"content-type": "application/json"}},
        {"content": b"x" * 50_000_000, "headers": {"content-type": "application/json"}},
        {"content": b"a,b", "headers": {"content-type": "text/csv"}},
        {
            "content": b'{"inputs": [' + b",".join([b"Infinity"] * 784) + b"]}",
            "headers": {"content-type": "application/json"},
        },
    ]
    statuses = []
    for i, request in enumerate(bad):
        try:
            statuses.append(httpx.post(f"{server}/predict", timeout=30, **request).status_code)
        except httpx.TransportError:
            # only the oversized upload may be cut off mid-body (the server answers and closes):
            # its status is then read from the raw answer to the same headers
            assert i == 1, f"request {i} ended in a transport error"
            statuses.append(status_of_an_upload_declaring(server, 50_000_000))
    assert statuses == [400, 413, 415, 422]
    assert status_of_an_upload_declaring(server, 50_000_000) == 413  # refused on its headers
    assert httpx.get(f"{server}/health", timeout=5).json() == {"status": "ok"}


def test_upload_and_record_a_sound_on_the_page(sound_run, chromium, tmp_path):
    """The sound panel: an uploaded WAV is classified; a recording from Chromium's fake
    microphone (a beep) is resampled in the browser, sent as WAV, and answered."""
    from conftest import tone

    from dlab.data.audio import write_wav

    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    clip = tmp_path / "high.wav"
    write_wav(clip, tone(1480, 0.6, seed=5), 8000)
    errors: list[str] = []
    with serving(sound_run.path) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("#sound-panel:not(.hidden)")
        page.set_input_files("#sound-upload", str(clip))
        page.wait_for_function("document.querySelector('#sound-result').textContent.length > 0")
        uploaded = page.inner_text("#sound-result")
        bars = page.locator("#sound-bars .bar").count()
        page.evaluate("document.querySelector('#sound-result').textContent = ''")
        page.click("#record")
        page.wait_for_function(
            "document.querySelector('#sound-result').textContent.length > 0"
            " || document.querySelector('#error').textContent.length > 0",
            timeout=20_000,
        )
        recorded, problem = page.inner_text("#sound-result"), page.inner_text("#error")
        browser.close()
    assert not errors, errors
    assert uploaded == "high" and bars == 2
    assert problem == "" and recorded in {"low", "high"}


def test_a_loopback_server_refuses_a_rebound_host_name(server):
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200
    rebound = httpx.get(f"{server}/health", headers={"host": "attacker.example"}, timeout=5)
    assert rebound.status_code == 400  # a page on attacker.example resolving to 127.0.0.1


def test_idle_connections_cannot_take_the_server_beyond_its_limit(image_run):
    """Held-open, half-sent requests count against --limit-concurrency: past it the server
    answers 503 at once instead of accepting connections without bound."""
    import socket
    from urllib.parse import urlsplit

    with serving(image_run.path, "--limit-concurrency", "3") as url:
        address = urlsplit(url)
        held = []
        for _ in range(3):  # a client that never finishes its header
            conn = socket.create_connection((address.hostname, address.port), timeout=5)
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(conn)
        try:
            refused = httpx.get(f"{url}/health", timeout=5)
        finally:
            for conn in held:
                conn.close()
        assert refused.status_code == 503
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # and recovers


def test_a_request_whose_headers_never_finish_is_cut_off(image_run):
    """Slowloris: headers trickling in are given --header-timeout seconds, then the connection
    closes; a whole request sent slowly but within the time, and a second request on the same
    keep-alive connection, are answered."""
    import socket
    from urllib.parse import urlsplit

    with serving(image_run.path, "--header-timeout", "1") as url:
        address = urlsplit(url)
        stalled = socket.create_connection((address.hostname, address.port), timeout=5)
        stalled.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        assert stalled.recv(1024) == b""  # closed by the server
        assert 0.8 < time.monotonic() - started < 4
        stalled.close()
        with socket.create_connection((address.hostname, address.port), timeout=5) as slow:
            for part in (b"GET /health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
                slow.sendall(part)
                time.sleep(0.3)
            assert slow.recv(1024).startswith(b"HTTP/1.1 200")
            time.sleep(1.5)  # idle between requests is keep-alive's business, not this clock's
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert slow.recv(1024).startswith(b"HTTP/1.1 200")


def test_pick_a_user_and_see_recommendations(rating_run, chromium):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    errors: list[str] = []
    with serving(rating_run.path) as url, playwright.sync_playwright() as p:
        browser, page = open_page(p, chromium, url, errors, height=800)
        page.wait_for_selector("#recommend-panel:not(.hidden)")
        assert page.input_value("#user") == "user0"  # the picker is filled from /users
        page.fill("#user", "user7")
        page.click("#recommend")
        page.wait_for_function("document.querySelectorAll('#recommended li').length === 10")
        shown = page.locator("#recommended li").all_inner_texts()
        liked = page.locator("#liked li").all_inner_texts()
        page.fill("#user", "stranger")
        page.click("#recommend")
        page.wait_for_function("document.querySelector('#fallback').textContent.length > 0")
        fallback = page.inner_text("#fallback")
        browser.close()
    expected = rating_run.recommend("user7", 10)
    assert [line.split(" — ")[0] for line in shown] == [r["title"] for r in expected["items"]]
    assert len(liked) == 5 and "unknown user stranger" in fallback
    assert not errors, errors


TOKEN = "correct-horse-battery-staple"


def test_a_locked_server_asks_for_its_token_then_classifies_an_upload(
    image_run, chromium, tmp_path
):
    """The token panel (a server started with --token) and the image upload button."""
    from dlab.data.mnist import MnistSampleConfig, build_mnist_sample

    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    images, labels = build_mnist_sample(MnistSampleConfig(name="mnist_sample")).test
    digit = tmp_path / "digit.png"
    Image.fromarray(images[120]).save(digit)  # a real test digit
    errors: list[str] = []
    with serving(image_run.path, "--token", TOKEN) as url, playwright.sync_playwright() as p:
        expected = httpx.post(
            f"{url}/predict",
            files={"file": ("digit.png", digit.read_bytes(), "image/png")},
            headers={"authorization": f"Bearer {TOKEN}"},
        ).json()["predictions"][0]
        browser, page = open_page(p, chromium, url, errors)
        page.wait_for_selector("#token-panel:not(.hidden)")
        assert page.inner_text("#subtitle") == "locked"
        assert "enter the token above" in page.inner_text("#error")
        assert page.locator("#image-panel.hidden").count() == 1  # nothing to use yet
        page.fill("#token", TOKEN)
        page.press("#token", "Enter")
        page.wait_for_selector("#image-panel:not(.hidden)")
        assert page.locator("#token-panel.hidden").count() == 1 and page.inner_text("#error") == ""
        page.set_input_files("#upload", str(digit))
        page.wait_for_function("document.querySelector('#result').textContent.length > 0")
        label = page.inner_text("#result")
        shown = page.locator("#bars .bar .value").all_inner_texts()
        browser.close()
    errors = [e for e in errors if "401" not in e]  # the locked first answer is expected
    assert not errors, errors
    assert label == expected["label"] == str(labels[120])
    best = max(expected["probabilities"].values())
    assert shown[0] == f"{100 * best:.1f}%"


def test_the_text_panel_classifies_what_is_typed(text_run, chromium):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    errors: list[str] = []
    review = "a wonderful moving film, great acting"
    with serving(text_run.path) as url, playwright.sync_playwright() as p:
        expected = httpx.post(f"{url}/predict", json={"text": review}).json()["predictions"][0]
        browser, page = open_page(p, chromium, url, errors)
        page.wait_for_selector("#text-panel:not(.hidden)")
        page.fill("#text", review)
        page.click("#classify")
        page.wait_for_function("document.querySelector('#text-result').textContent.length > 0")
        label = page.inner_text("#text-result")
        names = page.locator("#text-bars .bar .name").all_inner_texts()
        browser.close()
    assert not errors, errors
    assert label == expected["label"]
    ranked = sorted(expected["probabilities"], key=expected["probabilities"].get, reverse=True)
    assert names == ranked  # every class, most likely first


def test_the_generate_panel_continues_the_prompt(gpt_run, text_folder, chromium):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    errors: list[str] = []
    with serving(gpt_run.path) as url, playwright.sync_playwright() as p:
        browser, page = open_page(p, chromium, url, errors)
        page.wait_for_selector("#generate-panel:not(.hidden)")
        page.fill("#prompt", "To be")
        page.click("#generate")
        page.wait_for_function("document.querySelector('#generated').textContent.length > 8")
        shown = page.inner_text("#generated")
        browser.close()
    assert not errors, errors
    # the prompt, then the 200 characters the page asks for (a character-level model, sampled:
    # each request draws anew), every one of them from the text it learned
    assert shown.startswith("To be") and len(shown) == len("To be") + 200
    assert set(shown) <= set((text_folder / "story.txt").read_text())
