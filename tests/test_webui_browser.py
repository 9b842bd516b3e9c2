"""The WebUI (GET /) in a real browser: Debian's headless Chromium driven by Selenium.

Nothing is downloaded: the browser and driver are the apt packages ``chromium`` and ``chromium-driver``
(/usr/bin/chromium, /usr/bin/chromedriver, passed explicitly so Selenium Manager never runs), and the page
only talks to the shared Serve instance on 127.0.0.1. Screenshots go to tests/artifacts/ (git-ignored).

``TTS_WEBUI_URL=http://host:port/`` points the tests at an already running service instead.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.audio import FORMATS

pytestmark = [pytest.mark.slow, pytest.mark.serve]

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("TTS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TTS_CHROMEDRIVER", "/usr/bin/chromedriver")
UI_TIMEOUT_S = 180.0  # a synthesis on a loaded 2-core box, first request included
TEXT = "今天天气真不错，我们一起去公园散步吧！"

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--no-proxy-server",  # loopback only
    "--window-size=900,760",
)

# Installed on every page load, before any click: record what the page sends and what Web Audio does.
_SPY_JS = """
window.__tts = {requests: [], sourcesStarted: 0, contexts: []};
const origFetch = window.fetch.bind(window);
window.fetch = (url, init) => {
  if (init && init.body) window.__tts.requests.push({url: String(url), body: JSON.parse(init.body)});
  return origFetch(url, init);
};
const origStart = AudioBufferSourceNode.prototype.start;
AudioBufferSourceNode.prototype.start = function (...args) {
  window.__tts.sourcesStarted += 1;
  window.__tts.contexts.push(this.context);
  return origStart.apply(this, args);
};
"""

# Wait for the <audio> element to load metadata, then play it muted until its clock moves (it really decodes).
_PLAYABLE_JS = """
const done = arguments[arguments.length - 1];
const timeoutMs = arguments[0];
const a = document.getElementById("player");
const report = (note) => done({
  note, src: a.src, readyState: a.readyState, duration: a.duration, currentTime: a.currentTime,
  error: a.error ? `${a.error.code} ${a.error.message}` : null,
});
const timer = setTimeout(() => report("timeout"), timeoutMs);
const finish = (note) => { clearTimeout(timer); report(note); };
a.addEventListener("error", () => finish("error"), {once: true});
const play = () => {
  a.muted = true;
  a.addEventListener("timeupdate", () => { if (a.currentTime > 0) finish("playing"); });
  a.addEventListener("ended", () => finish("ended"), {once: true});
  a.play().catch((e) => finish("play() rejected: " + e));
};
if (a.error) finish("error");
else if (a.readyState >= 1) play();
else a.addEventListener("loadedmetadata", play, {once: true});
"""


class WebUI:
    """Thin page object over the WebUI's element ids (see serve_app/static/index.html)."""

    def __init__(self, driver: Any) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.wait = WebDriverWait(driver, UI_TIMEOUT_S, poll_frequency=0.2)

    def el(self, element_id: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def options(self, select_id: str) -> list[str]:
        return self.js(f"return [...document.getElementById('{select_id}').options].map(o => o.value)")

    def choose(self, select_id: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.el(select_id)).select_by_value(value)
        assert self.el(select_id).get_attribute("value") == value

    def type_text(self, text: str) -> None:
        area = self.el("text")
        area.clear()
        if text:
            area.send_keys(text)

    def set_speed(self, value: str) -> None:
        box = self.el("speed")
        box.clear()
        box.send_keys(value)

    def set_stream(self, on: bool) -> None:
        box = self.el("stream")
        if box.is_selected() != on:
            box.click()
        assert box.is_selected() == on

    def synthesize(self) -> None:
        """Click the button and wait until its request has finished (the button is enabled again)."""
        before = len(self.requests())
        self.el("synth").click()
        self.wait.until(lambda _: len(self.requests()) > before, "the click sent no request")
        self.wait.until(lambda _: self.el("synth").is_enabled(), "synthesis did not finish")

    def requests(self) -> list[dict[str, Any]]:
        return self.js("return window.__tts.requests")

    def error(self) -> str:
        return self.el("error").text.strip()

    def status(self) -> str:
        return self.el("status").text.strip()

    def audio_src(self) -> str:
        return self.js("return document.getElementById('player').getAttribute('src') || ''")

    def wait_playable(self) -> dict[str, Any]:
        self.wait.until(lambda _: self.audio_src().startswith(("blob:", "data:")), "<audio> got no source")
        return self.driver.execute_async_script(_PLAYABLE_JS, 60_000)

    def severe_console(self) -> list[str]:
        """SEVERE browser-console lines other than the expected 'Failed to load resource' of a 4xx answer."""
        logs = self.driver.get_log("browser")
        return [
            e["message"]
            for e in logs
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
        ]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        assert self.driver.save_screenshot(str(path)), f"screenshot {path} failed"
        assert path.stat().st_size > 5000, f"screenshot {path} is suspiciously small"
        return path


def _tools_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found: apt-get install -y chromium chromium-driver")
    pytest.importorskip("selenium", reason="selenium is not installed (requirements-dev.txt)")


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """One headless Chromium per module, fresh profile, no network beyond loopback."""
    _tools_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory(prefix="webui-chromium-") as profile:
        mp.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver or browser
        mp.setenv("SE_AVOID_STATS", "true")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            drv.set_page_load_timeout(UI_TIMEOUT_S)
            drv.set_script_timeout(UI_TIMEOUT_S)
            yield drv
        finally:
            drv.quit()


@pytest.fixture(scope="module")
def webui_url(request: pytest.FixtureRequest) -> str:
    override = os.environ.get("TTS_WEBUI_URL")
    if override:
        return override.rstrip("/") + "/"
    return request.getfixturevalue("serve_instance").url + "/"


@pytest.fixture
def ui(driver: Any, webui_url: str) -> Iterator[WebUI]:
    """The WebUI freshly loaded, voices listed, spies installed; fails on CSP violations or script errors."""
    driver.get(webui_url)
    page = WebUI(driver)
    page.wait.until(lambda _: page.options("voice") or page.error(), "voices never loaded")
    assert not page.error(), f"WebUI shows an error after loading: {page.error()}"
    page.js(_SPY_JS)
    page.severe_console()  # drain
    yield page
    problems = page.severe_console()
    assert not problems, f"browser console errors: {problems}"


def _voices_info(ui: WebUI) -> dict[str, Any]:
    return ui.driver.execute_async_script(
        "const done = arguments[0]; fetch('api/voices').then(r => r.json()).then(done, e => done(String(e)));"
    )


def _status_audio_seconds(status: str) -> float:
    m = re.search(r"\(([\d.]+) s audio\)", status)
    assert m, f"status line has no audio duration: {status!r}"
    return float(m.group(1))


def test_synthesize_plays_and_screenshot(ui: WebUI) -> None:
    info = _voices_info(ui)
    voices = [v["name"] for v in info["voices"]]
    assert ui.options("voice") == voices
    assert ui.options("format") == list(FORMATS)
    assert ui.el("format").get_attribute("value") == "wav"
    voice = voices[-1]  # not the default: the choice must reach the request
    ui.choose("voice", voice)
    emotions = ui.options("emotion")
    assert emotions == next(v["emotions"] for v in info["voices"] if v["name"] == voice)
    emotion = next((e for e in emotions if e != "neutral"), emotions[0])
    ui.choose("emotion", emotion)
    ui.choose("format", "mp3")
    ui.set_speed("1.2")
    ui.type_text(TEXT)
    assert ui.el("text").get_attribute("value") == TEXT

    ui.synthesize()
    assert not ui.error(), ui.error()
    sent = ui.requests()[-1]
    assert sent["url"].endswith("api/tts")
    assert sent["body"] == {
        "text": TEXT,
        "voice": voice,
        "emotion": emotion,
        "speed": 1.2,
        "format": "mp3",
    }
    state = ui.wait_playable()
    assert state["note"] in ("playing", "ended"), state
    assert state["src"].startswith("blob:"), state
    assert state["readyState"] >= 1 and state["duration"] > 0, state
    server_s = _status_audio_seconds(ui.status())
    assert abs(state["duration"] - server_s) < 0.1, (state, ui.status())
    download = ui.el("download")
    assert download.is_displayed()
    assert download.get_attribute("href") == state["src"]
    assert download.get_attribute("download") == "speech.mp3"
    ui.js("const a = document.getElementById('player'); a.pause(); a.currentTime = 0; a.muted = false;")
    path = ui.screenshot("webui.png")
    print(f"screenshot: {path}")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_offered_format_plays(ui: WebUI, fmt: str) -> None:
    ui.type_text("你好，世界。")
    ui.choose("format", fmt)
    ui.synthesize()
    assert not ui.error(), ui.error()
    state = ui.wait_playable()
    assert state["note"] in ("playing", "ended"), f"{fmt}: the browser cannot play the result: {state}"
    assert not ui.error(), ui.error()
    assert abs(state["duration"] - _status_audio_seconds(ui.status())) < 0.1, (state, ui.status())


def test_streaming_playback(ui: WebUI) -> None:
    ui.type_text(TEXT)
    ui.set_stream(True)
    ui.synthesize()
    assert not ui.error(), ui.error()
    sent = ui.requests()[-1]["body"]
    assert sent["stream"] is True and sent["format"] == "pcm", sent
    assert "首包 first audio" in ui.status(), ui.status()
    web_audio = ui.js(
        "const t = window.__tts; return {started: t.sourcesStarted,"
        " states: [...new Set(t.contexts)].map(c => c.state)}"
    )
    assert web_audio["started"] >= 1, web_audio
    assert web_audio["states"] == ["running"], f"Web Audio context not playing: {web_audio}"
    state = ui.wait_playable()  # the recording assembled from the stream, offered when it ends
    assert state["note"] in ("playing", "ended"), state
    assert ui.el("download").get_attribute("download") == "speech.wav"

    # The same request without streaming yields the same length of audio.
    ui.set_stream(False)
    ui.choose("format", "wav")
    ui.synthesize()
    batch = ui.wait_playable()
    assert abs(batch["duration"] - state["duration"]) < 0.02, (batch, state)
    # A second streamed synthesis reuses the page's audio output.
    ui.set_stream(True)
    ui.synthesize()
    assert not ui.error(), ui.error()
    assert ui.js("return new Set(window.__tts.contexts).size") == 1


def test_errors_are_shown(ui: WebUI) -> None:
    limit = _voices_info(ui)["limits"]["max_text_chars"]
    assert int(ui.el("text").get_attribute("maxlength")) == limit

    ui.type_text("")
    ui.synthesize()
    assert "422" in ui.error() and "text" in ui.error(), ui.error()
    assert ui.audio_src() == ""
    assert ui.el("error").is_displayed()

    ui.type_text("   ")
    ui.synthesize()
    assert "text is empty" in ui.error(), ui.error()

    # Typing stops at the limit; text put in programmatically past it is refused by the server, visibly.
    ui.type_text("好" * (limit + 5))
    assert len(ui.el("text").get_attribute("value")) == limit
    ui.js("document.getElementById('text').value = arguments[0]", "好" * (limit + 1))
    ui.synthesize()
    assert "413" in ui.error() and "text_too_long" in ui.error(), ui.error()
    assert ui.audio_src() == ""

    ui.type_text(TEXT)
    ui.set_speed("5")
    ui.synthesize()
    assert "422" in ui.error() and "speed" in ui.error(), ui.error()
    ui.screenshot("webui-error.png")

    # Audio the browser cannot decode is reported, not left as a silent, dead player.
    ui.js("offerDownload(new Blob(['not audio'], {type: 'audio/wav'}), 'wav')")
    ui.wait.until(lambda _: "cannot play" in ui.error(), "undecodable audio raised no visible error")

    # A good request afterwards clears the error.
    ui.set_speed("1")
    ui.synthesize()
    assert ui.error() == ""
    assert ui.wait_playable()["note"] in ("playing", "ended")
