"""The web page at `/`, driven in a real browser (Debian's chromium through Playwright) against the real stack.

Screenshots land in test-output/web/ (git-ignored). The browser tests fail, saying how to install it, when
chromium or the Python `playwright` package is missing: a green suite means the page was driven (`make test`
installs chromium when it runs as root).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from echovids.harness import ROOT, Stack, write_wav
from tests.sounds import SR, mix_at_snr, synthetic_library

# One stack for the whole module: the session's embedded one (shared with the other suites, low CPU).
pytestmark = pytest.mark.parametrize("stack", ["embedded"], indirect=True)

CHROMIUM = os.environ.get("ECHOVIDS_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "test-output" / "web"
N_SOUNDS = 8
SEED = 23  # not the end-to-end suite's seed: these sounds differ from its library in the same stack
MIC_SOUND = 5
WAIT_MS = 120_000


def sounds() -> list[np.ndarray]:
    return synthetic_library(N_SOUNDS, seed=SEED)


@pytest.fixture(scope="session")
def web_library(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Ingest web_00..web_07 through the CLI; returns title -> clip id (read back through a search)."""
    folder = tmp_path_factory.mktemp("web-library")
    for i, sound in enumerate(sounds()):
        write_wav(folder / f"web_{i:02d}.wav", sound)
    done = stack.cli("ingest", str(folder))
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"ingested {N_SOUNDS} of {N_SOUNDS} files" in done.stdout
    return {"folder": str(folder)}


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What Chromium's fake microphone plays (looped): one library sound, at 48 kHz like a real device."""
    x = sounds()[MIC_SOUND]
    t_in = np.arange(x.size) / SR
    t_out = np.arange(int(x.size * 48_000 / SR)) / 48_000
    return write_wav(tmp_path_factory.mktemp("mic") / "mic.wav", np.interp(t_out, t_in, x), sr=48_000)


@pytest.fixture(scope="module")
def browser(mic_wav: Path) -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python `playwright` package is not installed: pip install -e '.[dev]'")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(
            f"no chromium at {CHROMIUM}: sudo apt-get install -y chromium (or set ECHOVIDS_TEST_CHROMIUM), "
            "or run make test as root, which installs it"
        )
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={mic_wav}",
                    "--autoplay-policy=no-user-gesture-required",
                ],
            )
        except Exception as exc:  # the binary is there but cannot start here
            pytest.fail(f"chromium at {CHROMIUM} does not start: {exc}")
        yield b
        b.close()


@pytest.fixture
def page(browser, stack: Stack, web_library: dict[str, str], request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    context = browser.new_context(
        base_url=stack.url,
        viewport={"width": 1280, "height": 900},
        permissions=["microphone", "clipboard-read", "clipboard-write"],
    )
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # Offline tests: never wait on YouTube.
    pg.route(
        re.compile(r"https://([a-z0-9-]+\.)*(youtube|youtube-nocookie|ytimg|google)\.com/.*"),
        lambda route: route.abort(),
    )
    pg.goto("/")
    pg.wait_for_selector("body[data-ready='true']")
    yield pg
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{request.node.name.split('[')[0]}-final.png"), full_page=True)
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def shot(pg, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def last_job(pg) -> dict:  # type: ignore[no-untyped-def]
    return pg.evaluate("window.echovids.search.lastJob")


# ---------------------------------------------------------------- HTTP, no browser


def test_config_exposes_public_limits(stack: Stack) -> None:
    body = httpx.get(f"{stack.url}/v1/config", timeout=10).json()
    assert body["max_query_s"] > 0 and body["max_upload_mb"] > 0
    assert "api_key" not in body


def test_page_and_assets_are_served(stack: Stack) -> None:
    page = httpx.get(f"{stack.url}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/app.js">' in page.text
    assert "https://" not in page.text  # offline: no CDN
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert httpx.get(f"{stack.url}{asset}", timeout=10).status_code == 200, asset
    js = httpx.get(f"{stack.url}/static/app.js", timeout=10)
    assert "javascript" in js.headers["content-type"]


def test_clip_audio_is_kept_and_served(stack: Stack, web_library: dict[str, str], tmp_path: Path) -> None:
    query = write_wav(tmp_path / "q.wav", sounds()[2][2 * SR : 5 * SR])
    job = stack.search(query, k=3)
    top = job["results"][0]
    assert top["title"] == "web_02"
    audio = httpx.get(f"{stack.url}/v1/library/{top['clip_id']}/audio", timeout=10)
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/wav"
    assert audio.content == (Path(web_library["folder"]) / "web_02.wav").read_bytes()
    ranged = httpx.get(f"{stack.url}/v1/library/{top['clip_id']}/audio", headers={"Range": "bytes=0-3"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == b"RIFF"
    missing = httpx.get(f"{stack.url}/v1/library/{'0' * 32}/audio", timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


# ---------------------------------------------------------------- in the browser


def test_keyboard_reaches_every_control_with_visible_focus(page) -> None:  # type: ignore[no-untyped-def]
    limit = page.evaluate("window.echovids.config.max_query_s")
    assert page.locator("#max-query").inner_text() == f"{limit:g}"
    focused = []
    for _ in range(4):  # skip link, the selected tab, Record, Choose a file
        page.keyboard.press("Tab")
        focused.append(
            page.evaluate(
                "document.activeElement.id || document.activeElement.className || document.activeElement.tagName"
            )
        )
        style = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert style != "none", (focused, style)
    assert "record-btn" in focused and "choose-btn" in focused, focused
    # Arrow keys move between the tabs (WAI-ARIA tabs pattern).
    page.focus("#tab-search")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "tab-library"
    assert page.locator("#panel-library").is_visible() and not page.locator("#panel-search").is_visible()
    page.keyboard.press("ArrowLeft")
    assert page.locator("#panel-search").is_visible()
    shot(page, "keyboard-focus")


def test_upload_finds_the_clip_and_starts_the_player_at_the_match(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    source, offset = 4, 2.0  # a falling chirp: every moment of it is different
    excerpt = sounds()[source][int(offset * SR) : int(offset * SR) + 3 * SR]
    query = write_wav(tmp_path / "door_knock.wav", mix_at_snr(excerpt, rng.standard_normal(excerpt.size), 15))

    page.set_input_files("#file-input", str(query))
    page.wait_for_selector("#stages li.current, #stages li.done")
    shot(page, "upload-in-progress")
    first = page.locator("#results li.result").first
    first.wait_for(timeout=WAIT_MS)
    assert page.locator("#stages").get_attribute("data-stage") == "done"
    assert "Done" in page.locator("#search-status").inner_text()

    job = last_job(page)
    top = job["results"][0]
    assert top["title"] == f"web_{source:02d}", job["results"][:3]
    assert abs(top["match_start_s"] - offset) <= 0.5, top
    assert first.get_attribute("data-title") == top["title"]
    assert float(first.get_attribute("data-start")) == pytest.approx(top["match_start_s"])

    # The audio player is cued at the matched second, and the waveform has been drawn.
    audio = first.locator("audio")
    page.wait_for_function("a => a.readyState >= 1", arg=audio.element_handle(), timeout=20_000)
    assert audio.evaluate("a => a.currentTime") == pytest.approx(top["match_start_s"], abs=0.05)
    canvas = first.locator("canvas.waveform")
    page.wait_for_function("c => !c.classList.contains('loading')", arg=canvas.element_handle(), timeout=20_000)
    assert "match highlighted" in canvas.get_attribute("aria-label")
    assert first.locator(".timecode").inner_text().startswith("match at 0:0")
    assert first.locator(".availability").inner_text() == "Available"

    # Copy link: the clip's audio URL with the start fragment.
    first.locator("button.copy-link").click()
    link = first.locator("button.copy-link").get_attribute("data-link")
    assert link.endswith(f"/v1/library/{top['clip_id']}/audio#t={top['match_start_s']:.2f}")
    assert page.evaluate("navigator.clipboard.readText()") == link
    assert "copied" in page.locator("#search-status").inner_text()
    shot(page, "upload-results")


def test_a_description_typed_and_entered_finds_timestamped_results(page) -> None:  # type: ignore[no-untyped-def]
    box = page.locator("#text-query")
    assert box.get_attribute("maxlength") == str(page.evaluate("window.echovids.config.max_text_chars"))
    box.focus()
    page.keyboard.press("Enter")  # nothing typed: a message, and no request
    assert page.locator("#search-error").is_visible() and page.locator("#status-card").is_hidden()
    box.fill("a high pitched beeping tone")
    page.keyboard.press("Enter")  # Enter submits: no mouse needed
    first = page.locator("#results li.result").first
    first.wait_for(timeout=WAIT_MS)
    job = last_job(page)
    assert job["text"] == "a high pitched beeping tone" and job["text_classes"], job
    assert job["results"] and all(0 < r["score"] <= 1 and r["match_start_s"] >= 0 for r in job["results"]), job
    top = job["results"][0]
    assert first.get_attribute("data-title") == top["title"]
    assert float(first.get_attribute("data-start")) == pytest.approx(top["match_start_s"])
    assert page.locator("#text-classes").inner_text().startswith("Heard as: " + job["text_classes"][0]["name"])
    assert page.locator("#query-audio").is_hidden()
    assert "Done" in page.locator("#search-status").inner_text()
    shot(page, "text-results")


def test_record_through_the_fake_microphone(page) -> None:  # type: ignore[no-untyped-def]
    posted: list[bytes] = []
    page.on("request", lambda r: posted.append(r.post_data_buffer or b"") if r.method == "POST" else None)
    page.click("#record-btn")
    page.wait_for_selector("#record-btn.recording")
    # The level meter moves with the (fake) microphone's sound, and the clock runs.
    page.wait_for_function(
        "Number(document.getElementById('meter').getAttribute('aria-valuenow')) > 20", timeout=10_000
    )
    page.wait_for_function("document.getElementById('rec-elapsed').textContent >= '0:04.0'", timeout=20_000)
    shot(page, "recording")
    page.press("#record-btn", "Enter")  # stop with the keyboard
    first = page.locator("#results li.result").first
    first.wait_for(timeout=WAIT_MS)
    job = last_job(page)
    assert job["results"][0]["title"] == f"web_{MIC_SOUND:02d}", job["results"][:3]
    assert first.get_attribute("data-title") == f"web_{MIC_SOUND:02d}"
    # Chromium records webm/opus, and the gateway took it.
    body = b"".join(posted)
    assert b"Content-Type: audio/webm" in body, body[:400]
    assert page.locator("#query-name").inner_text().startswith("Recording")
    shot(page, "recording-results")


def test_a_text_file_gets_the_unsupported_media_type_message(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a sound\n")
    page.set_input_files("#file-input", str(notes))
    alert = page.locator("#search-error")
    alert.wait_for(state="visible", timeout=20_000)
    assert alert.get_attribute("data-code") == "unsupported_media_type"
    assert "That file is not audio" in alert.inner_text()
    assert page.locator("#stages li.failed").get_attribute("data-stage") == "uploading"
    shot(page, "error-unsupported-media-type")


def test_a_too_short_sound_fails_with_a_clear_message(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blip = write_wav(tmp_path / "blip.wav", sounds()[1][: int(0.2 * SR)])
    page.set_input_files("#file-input", str(blip))
    alert = page.locator("#search-error")
    alert.wait_for(state="visible", timeout=WAIT_MS)
    code = alert.get_attribute("data-code")
    assert code in ("audio_too_short", "undecodable_audio"), alert.inner_text()
    if code == "audio_too_short":
        assert "too short to search" in alert.inner_text()
    shot(page, "error-too-short")


def test_every_api_error_code_has_its_own_message(page) -> None:  # type: ignore[no-untyped-def]
    codes = [
        "payload_too_large",
        "unsupported_media_type",
        "undecodable_audio",
        "audio_too_short",
        "audio_too_long",
        "validation_error",
        "not_found",
        "method_not_allowed",
        "embedding_space_mismatch",
        "text_search_unavailable",
        "unauthorized",
        "forbidden",
        "service_unavailable",
        "internal_error",
        "network_error",
    ]
    texts = page.evaluate(
        """async (codes) => {
        const m = await import('/static/messages.js');
        return codes.map((c) => m.explain(c, {max_upload_mb: 50, max_query_s: 60}));
    }""",
        codes,
    )
    generic = page.evaluate("async () => (await import('/static/messages.js')).explain('no_such_code')")
    assert len(set(texts)) == len(codes) and generic not in texts
    assert "50 MB" in texts[0] and "60 seconds" in texts[4]


def test_youtube_result_embeds_the_player_at_the_absolute_second(page) -> None:  # type: ignore[no-untyped-def]
    """The YouTube branch, with the API answer stubbed (no YouTube clips offline)."""
    start_s, match_s = 30.0, 4.6
    job = {
        "id": "yt",
        "kind": "search",
        "status": "done",
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:01Z",
        "k": 10,
        "partial": False,
        "missing_shards": [],
        "results": [
            {
                "clip_id": "c1",
                "title": "Dog barking in the yard",
                "match_start_s": match_s,
                "query_start_s": 0.0,
                "score": 0.87,
                "match": "similar",
                "labels": ["Dog", "Bark"],
                "available": True,
                "source": {
                    "kind": "youtube",
                    "youtube_id": "dQw4w9WgXcQ",
                    "start_s": start_s,
                    "end_s": 40.0,
                    "url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=34s",
                },
            },
            {
                "clip_id": "c2",
                "title": "Removed video",
                "match_start_s": 1.0,
                "query_start_s": 0.0,
                "score": 0.5,
                "match": "exact",
                "labels": [],
                "available": None,
                "source": {"kind": "youtube", "youtube_id": "aaaaaaaaaaa", "start_s": 0.0, "end_s": 10.0},
            },
        ],
    }
    page.route(
        "**/v1/searches",
        lambda route: route.fulfill(
            status=202, json={**job, "status": "queued", "results": None}, headers={"Location": "/v1/searches/yt"}
        ),
    )
    page.route("**/v1/searches/yt", lambda route: route.fulfill(status=200, json=job))
    page.evaluate("""() => window.echovids.search.search(
        new File([new Uint8Array(64)], 'bark.wav', {type: 'audio/wav'}), 'bark.wav')""")
    first = page.locator("#results li.result").first
    first.wait_for(timeout=20_000)
    expected = math.floor(start_s + match_s)
    src = first.locator("iframe").get_attribute("src")
    assert src.startswith("https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ?") and f"start={expected}" in src
    assert first.get_attribute("data-start") == str(expected)
    text = first.inner_text()
    assert "Dog barking in the yard" in text and "Dog" in text and "Bark" in text
    assert "0.87" in text and "Available" in text
    assert first.locator("button.copy-link").get_attribute("data-link").endswith("t=34s")
    second = page.locator("#results li.result").nth(1)
    assert "Availability unknown" in second.inner_text()
    assert second.locator(".match").text_content() == "Exact copy"
    shot(page, "youtube-results")


def _library_endpoint(stack: Stack) -> httpx.Response:
    answer = httpx.get(f"{stack.url}/v1/library", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer


def test_library_tab_lists_filters_uploads_and_deletes(page, stack: Stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    answer = _library_endpoint(stack)
    assert answer.status_code == 200, answer.text
    key = stack.env.get("ECHOVIDS_API_KEY", "test-key")
    page.click("#tab-library")
    page.wait_for_selector("body[data-library='available']", timeout=20_000)
    page.wait_for_selector("#library-rows tr", timeout=20_000)
    shot(page, "library")

    page.fill("#filter-q", "web_04")
    page.press("#filter-q", "Enter")
    page.wait_for_function(
        "[...document.querySelectorAll('#library-rows tr th')].every(t => "
        "t.textContent.includes('web_04')) && document.querySelectorAll('#library-rows tr').length"
    )

    upload = write_wav(tmp_path / "uploaded_from_web.wav", sounds()[6][::-1])  # new bytes: not a duplicate
    page.fill("#api-key", key)
    page.set_input_files("#upload-files", str(upload))
    page.fill("#upload-labels", "Webtest")
    page.click("#upload-btn")
    page.wait_for_function(
        "document.getElementById('upload-status').textContent.startsWith('Uploaded')", timeout=20_000
    )
    page.fill("#filter-q", "uploaded_from_web")
    row = page.locator("#library-rows tr", has_text="uploaded_from_web")
    for _ in range(60):
        page.press("#filter-q", "Enter")
        if row.count():
            break
        page.wait_for_timeout(1000)
    assert row.count() == 1
    shot(page, "library-uploaded")
    row.locator("button.delete").click()
    row.locator("button.confirm-delete").click()
    page.wait_for_function(
        "document.getElementById('library-status').textContent.startsWith('Deleted')", timeout=20_000
    )
    assert page.locator("#library-rows tr", has_text="uploaded_from_web").count() == 0
