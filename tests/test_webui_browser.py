"""The WebUI (GET /) in a real browser: Debian's headless Chromium driven by Selenium.

Nothing is downloaded: the browser and driver are the apt packages ``chromium`` and ``chromium-driver``
(/usr/bin/chromium, /usr/bin/chromedriver, passed explicitly so Selenium Manager never runs), and the page
only talks to the shared Serve instance on 127.0.0.1 (the tiny random model). A spy installed before the
page's own script (DevTools ``Page.addScriptToEvaluateOnNewDocument``) records every request the page sends,
the status and JSON it got back, and every Web Audio source it starts. Screenshots go to tests/artifacts/
(git-ignored).

``TTS_WEBUI_URL=http://host:port/`` points the tests at an already running service instead.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
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
LONG_TEXT = (
    "您好，这里是客服中心。您的订单已经发货，预计明天下午送达，请保持电话畅通。"
    "感谢您的耐心等待，祝您生活愉快！"
)

SLIDER_LIMITS = {"intensity": "emotion_intensity", "speed": "speed", "pitch": "pitch", "volume": "volume"}
MAGIC = {"wav": b"RIFF", "mulaw": b"RIFF", "alaw": b"RIFF", "flac": b"fLaC", "ogg": b"OggS", "opus": b"OggS"}

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
    "--autoplay-policy=no-user-gesture-required",  # Web Audio/<audio> may start from a Selenium click
    "--window-size=1000,900",
)

# Runs before the page's own script on every load. ``__ttsVoicesOverride`` (set by an earlier injected
# script) rewrites fields of the /api/voices answer, to show the page what a real model would report.
_SPY_JS = """
window.__tts = {requests: [], sourcesStarted: 0, contexts: []};
const origFetch = window.fetch.bind(window);
window.fetch = async (url, init) => {
  init = init || {};
  const rec = {url: String(url), method: init.method || "GET", headers: init.headers || {},
               body: init.body ? JSON.parse(init.body) : null, status: null, json: null};
  window.__tts.requests.push(rec);
  const resp = await origFetch(url, init);
  rec.status = resp.status;
  rec.randomHeader = resp.headers.get("X-Random-Weights");
  const type = resp.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) {
    const j = await resp.clone().json();
    if (j && j.audio_base64) {  // keep its decoded size and first bytes only
      const bin = atob(j.audio_base64);
      j.audio_base64 = {bytes: bin.length, head: [...bin.slice(0, 16)].map((c) => c.charCodeAt(0))};
    }
    rec.json = j;
    if (window.__ttsVoicesOverride && rec.url.endsWith("api/voices") && resp.ok) {
      return new Response(JSON.stringify(Object.assign(j, window.__ttsVoicesOverride)),
                          {status: resp.status, headers: resp.headers});
    }
  }
  return resp;
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

# Columns of the waveform canvas holding a drawn sample (the waveform blues), over the canvas width.
_CANVAS_COVERAGE_JS = """
const c = document.getElementById("wave");
const g = c.getContext("2d");
const d = g.getImageData(0, 0, c.width, c.height).data;
let cols = 0;
for (let x = 0; x < c.width; x++) {
  for (let y = 0; y < c.height; y++) {
    const i = (y * c.width + x) * 4;
    if (d[i + 3] > 0 && d[i + 2] > 150 && d[i] < 140) { cols++; break; }
  }
}
return cols / c.width;
"""

# Play the result muted from the start and sample (currentTime, highlighted syllable) until it ends.
_HIGHLIGHT_SAMPLES_JS = """
const done = arguments[arguments.length - 1];
const a = document.getElementById("player");
const samples = [];
a.pause(); a.muted = true; a.currentTime = 0;
const sample = () => {
  const act = document.querySelectorAll("#syllables .syl.active");
  samples.push({t: a.currentTime, active: [...act].map((s) => Number(s.dataset.i)),
                spoken: document.querySelectorAll("#syllables .syl.spoken").length});
};
const timer = setInterval(sample, 40);
const stop = (note) => { clearInterval(timer); sample(); done({note, samples}); };
a.addEventListener("ended", () => stop("ended"), {once: true});
setTimeout(() => stop("timeout"), arguments[0]);
a.play().catch((e) => stop("play() rejected: " + e));
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

    def slide(self, slider_id: str, steps: int) -> float:
        """Move a range slider by ``steps`` with the arrow keys, as a keyboard user would; its new value."""
        from selenium.webdriver.common.keys import Keys

        slider = self.el(slider_id)
        key = Keys.ARROW_RIGHT if steps > 0 else Keys.ARROW_LEFT
        slider.send_keys(*([key] * abs(steps)))
        return float(slider.get_attribute("value"))

    def set_stream(self, on: bool) -> None:
        box = self.el("stream")
        if box.is_selected() != on:
            box.click()
        assert box.is_selected() == on

    def synthesize(self) -> dict[str, Any]:
        """Click the button, wait until its request has finished; the recorded request."""
        before = len(self.requests())
        self.el("synth").click()
        self.wait.until(lambda _: len(self.requests()) > before, "the click sent no request")
        self.wait.until(lambda _: self.el("synth").is_enabled(), "synthesis did not finish")
        return self.requests()[-1]

    def requests(self) -> list[dict[str, Any]]:
        """The synthesis requests the page sent (POSTs), oldest first."""
        return self.js("return window.__tts.requests.filter(r => r.method === 'POST')")

    def error(self) -> str:
        return self.el("error").text.strip() if self.el("error").is_displayed() else ""

    def status(self) -> str:
        return self.el("status").text.strip()

    def metric(self, name: str) -> str:
        return self.el(f"m-{name}").text.strip()

    def audio_src(self) -> str:
        return self.js("return document.getElementById('player').getAttribute('src') || ''")

    def wait_playable(self) -> dict[str, Any]:
        self.wait.until(lambda _: self.audio_src().startswith(("blob:", "data:")), "<audio> got no source")
        return self.driver.execute_async_script(_PLAYABLE_JS, 60_000)

    def canvas_coverage(self) -> float:
        return float(self.js(_CANVAS_COVERAGE_JS))

    def download(self, directory: Path) -> bytes:
        """Click the download link as a user would; the bytes of the file Chromium saved."""
        import time

        directory.mkdir(parents=True, exist_ok=True)
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(directory)}
        )
        name = self.el("download").get_attribute("download")
        target = directory / name
        target.unlink(missing_ok=True)
        self.el("download").click()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if target.exists() and not list(directory.glob("*.crdownload")):
                return target.read_bytes()
            time.sleep(0.1)
        raise AssertionError(f"{name} was not downloaded into {directory}: {list(directory.iterdir())}")

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
    """One headless Chromium per module, fresh profile, no network beyond loopback, spy on every page."""
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
            drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _SPY_JS})
            yield drv
        finally:
            drv.quit()


@pytest.fixture(scope="module")
def webui_url(request: pytest.FixtureRequest) -> str:
    override = os.environ.get("TTS_WEBUI_URL")
    if override:
        return override.rstrip("/") + "/"
    return request.getfixturevalue("serve_instance").url + "/"


def _open(driver: Any, url: str) -> WebUI:
    driver.get(url)
    page = WebUI(driver)
    page.wait.until(lambda _: page.options("voice") or page.error(), "voices never loaded")
    assert not page.error(), f"WebUI shows an error after loading: {page.error()}"
    return page


@pytest.fixture
def ui(driver: Any, webui_url: str) -> Iterator[WebUI]:
    """The WebUI freshly loaded, voices listed, spy installed; fails on CSP violations or script errors."""
    driver.set_window_size(1000, 900)
    page = _open(driver, webui_url)
    yield page
    problems = page.severe_console()
    assert not problems, f"browser console errors: {problems}"


def _voices_info(ui: WebUI) -> dict[str, Any]:
    return ui.driver.execute_async_script(
        "const done = arguments[0]; fetch('api/voices').then(r => r.json()).then(done, e => done(String(e)));"
    )


def _ms(text: str) -> float:
    """A metric cell ("183 ms" / "1.24 s") in milliseconds."""
    m = re.fullmatch(r"([\d.]+) (ms|s)", text)
    assert m, f"not a duration: {text!r}"
    return float(m.group(1)) * (1 if m.group(2) == "ms" else 1000)


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+) s", text)
    assert m, f"not seconds: {text!r}"
    return float(m.group(1))


# ---------------------------------------------------------------------------------------------- controls
def test_controls_change_the_request(ui: WebUI) -> None:
    """Each control, moved alone, changes exactly its field of the request, and the model received it."""
    info = _voices_info(ui)
    default_voice = next(v["name"] for v in info["voices"] if v["default"])
    assert ui.options("voice") == [v["name"] for v in info["voices"]]
    assert ui.options("format") == list(FORMATS)
    assert ui.options("rate") == [""] + [str(r) for r in info["sample_rates"]]
    for slider, limit in SLIDER_LIMITS.items():
        bounds = [float(ui.el(slider).get_attribute(a)) for a in ("min", "max")]
        assert bounds == info["limits"][limit], (slider, bounds)
    ui.type_text(TEXT)

    sent = ui.synthesize()
    assert sent["status"] == 200 and not ui.error(), (sent, ui.error())
    baseline = {
        "text": TEXT,
        "voice": default_voice,
        "emotion": "neutral",
        "emotion_intensity": 1,
        "speaker": None,
        "speed": 1,
        "pitch": 0,
        "volume": 1,
        "format": "wav",
        "sample_rate": None,
        "stream": False,
    }
    assert sent["body"] == baseline
    assert sent["headers"]["Accept"] == "application/json"  # the answer carries timestamps and unit reports

    other_voice = next(v for v in info["voices"] if not v["default"])
    emotion = next(e for e in other_voice["emotions"] if e != "neutral")
    speaker = other_voice["speakers"][-1]

    def voice() -> None:
        ui.choose("voice", other_voice["name"])
        assert ui.options("emotion") == other_voice["emotions"]
        assert ui.options("speaker") == ["", *other_voice["speakers"]]

    # (control, how a user moves it, the request change, where the answer shows the service applied it)
    cases: list[tuple[str, Callable[[], object], dict[str, Any], tuple[str, str, object]]] = [
        ("voice", voice, {"voice": other_voice["name"]}, ("reply", "voice", other_voice["name"])),
        (
            "emotion",
            lambda: ui.choose("emotion", emotion),
            {"emotion": emotion},
            ("unit", "emotion", emotion),
        ),
        (
            "intensity",
            lambda: ui.slide("intensity", 4),
            {"emotion_intensity": 1.2},
            ("unit", "emotion_intensity", 1.2),
        ),
        (
            "speaker",
            lambda: ui.choose("speaker", speaker),
            {"speaker": speaker},
            ("unit", "speaker", speaker),
        ),
        ("speed", lambda: ui.slide("speed", -10), {"speed": 0.5}, ("unit", "rate", 0.5)),
        ("pitch", lambda: ui.slide("pitch", 6), {"pitch": 3}, ("unit", "pitch", 3)),
        ("volume", lambda: ui.slide("volume", -6), {"volume": 0.7}, ("unit", "volume", 0.7)),
        (
            "format",
            lambda: ui.choose("format", "mp3"),
            {"format": "mp3"},
            ("reply", "media_type", "audio/mpeg"),
        ),
        ("rate", lambda: ui.choose("rate", "24000"), {"sample_rate": 24000}, ("reply", "sample_rate", 24000)),
    ]
    durations = {}
    for name, act, change, (where, key, expected) in cases:
        ui.el("reset").click()
        if name != "voice":
            ui.choose("voice", default_voice)
        act()
        sent = ui.synthesize()
        assert sent["status"] == 200 and not ui.error(), (name, sent["status"], ui.error())
        assert sent["body"] == {**baseline, **change}, f"{name}: {sent['body']}"
        answer = sent["json"] if where == "reply" else sent["json"]["units"][0]
        assert answer[key] == expected, f"{name}: the service did not apply it: {sent['json']}"
        durations[name] = sent["json"]["duration_s"]
    assert durations["speed"] > 1.5 * durations["voice"], durations  # half speed → about twice as long

    # The slider labels say what will be sent.
    ui.el("reset").click()
    ui.slide("pitch", -3)
    assert ui.el("pitch-out").text == "-1.5 st"
    # Formats with a fixed rate disable the sample-rate choice and send none.
    ui.choose("rate", "48000")
    ui.choose("format", "mulaw")
    assert not ui.el("rate").is_enabled()
    sent = ui.synthesize()
    assert sent["body"]["sample_rate"] is None and sent["json"]["sample_rate"] == 8000, sent


# ---------------------------------------------------------------------------------------------- result view
def test_waveform_timestamps_and_highlighting(ui: WebUI) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    assert ui.canvas_coverage() < 0.05  # nothing drawn yet but the axis
    ui.type_text(LONG_TEXT)
    sent = ui.synthesize()
    assert sent["status"] == 200 and not ui.error(), ui.error()
    ts = sent["json"]["timestamps"]
    assert len(ts) > 20, ts

    # The waveform fills the canvas width.
    ui.wait.until(lambda _: ui.canvas_coverage() > 0.8, "the waveform was not drawn across the canvas")

    # One span per syllable with the API's exact times; pinyin from the unit reports as ruby.
    spans = ui.js(
        "return [...document.querySelectorAll('#syllables .syl')].map(s => ({"
        " text: s.querySelector('ruby') ? s.querySelector('ruby').firstChild.textContent : s.textContent,"
        " start: Number(s.dataset.start), end: Number(s.dataset.end),"
        " py: s.querySelector('rt') ? s.querySelector('rt').textContent : null}))"
    )
    assert [s["text"] for s in spans] == [t["text"] for t in ts]
    assert [(s["start"], s["end"]) for s in spans] == [(t["start_s"], t["end_s"]) for t in ts]
    pinyin = [p for u in sent["json"]["units"] for p in u["pinyin"]]
    assert [s["py"] for s in spans] == pinyin

    # Metrics of the last request.
    duration = sent["json"]["duration_s"]
    assert abs(_seconds(ui.metric("audio")) - duration) < 0.006
    total_ms = _ms(ui.metric("total"))
    assert 0 < _ms(ui.metric("ttfa")) <= total_ms
    rtf = float(ui.metric("rtf").split()[0])
    assert rtf == pytest.approx(total_ms / 1000 / duration, rel=0.05, abs=0.002)

    # Playback: the highlighted syllable is the one being spoken, and it advances.
    result = ui.driver.execute_async_script(_HIGHLIGHT_SAMPLES_JS, 60_000)
    assert result["note"] == "ended", result
    samples = result["samples"]
    seen: list[int] = []
    late = []
    for s in samples:
        assert len(s["active"]) <= 1, s
        if s["active"]:
            i = s["active"][0]
            # the highlight is drawn per animation frame: a frame or two behind the clock the sample read,
            # more only when a loaded box drops frames
            lag = max(ts[i]["start_s"] - s["t"], s["t"] - ts[i]["end_s"], 0.0)
            assert lag < 0.5, (s, ts[i])
            if lag > 0.1:
                late.append((s, ts[i]))
            if not seen or seen[-1] != i:
                seen.append(i)
    assert len(late) <= 0.1 * len(samples), f"highlight out of step with the audio: {late}"
    assert len(seen) >= 0.5 * len(ts), f"highlight visited only {seen} of {len(ts)} syllables"
    assert seen == sorted(seen), f"highlight went backwards: {seen}"
    assert samples[-1]["spoken"] == len(ts) and not samples[-1]["active"], samples[-1]

    # Clicking the waveform seeks: three quarters across → three quarters into the audio.
    ui.js("document.getElementById('player').pause()")
    ActionChains(ui.driver).move_to_element_with_offset(
        ui.el("wave"), int(ui.el("wave").size["width"] * 0.25), 0
    ).click().perform()
    seek = ui.js("return document.getElementById('player').currentTime")
    assert seek == pytest.approx(0.75 * duration, abs=0.05), (seek, duration)
    ui.wait.until(lambda _: ui.js("return document.querySelectorAll('#syllables .syl.active').length") <= 1)

    # Clicking a syllable seeks the player to it (and highlights it as the seek lands) and plays on.
    target = len(ts) // 2
    ui.js(
        "window.__seeks = []; const a = document.getElementById('player');"
        "a.addEventListener('seeked', () => window.__seeks.push({t: a.currentTime,"
        " active: [...document.querySelectorAll('#syllables .syl.active')].map(s => Number(s.dataset.i))}));"
        "document.querySelectorAll('#syllables .syl')[arguments[0]].scrollIntoView();",
        target,
    )
    ui.driver.find_elements(By.CSS_SELECTOR, "#syllables .syl")[target].click()
    ui.wait.until(lambda _: ui.js("return window.__seeks.length"), "clicking a syllable did not seek")
    landed = ui.js("return window.__seeks[0]")
    # playback may already have moved on a little when the event is dispatched
    assert landed["active"] == [target], (landed, ts[target])
    assert ts[target]["start_s"] <= landed["t"] < ts[target]["end_s"], (landed, ts[target])
    ui.wait.until(
        lambda _: ui.js("const a = document.getElementById('player'); return !a.paused && a.currentTime > 0"),
        "the player did not play from the clicked syllable",
    )


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_plays_draws_and_downloads(ui: WebUI, fmt: str, tmp_path: Path) -> None:
    ui.type_text("你好，世界。")
    ui.choose("format", fmt)
    sent = ui.synthesize()
    assert sent["status"] == 200 and not ui.error(), ui.error()
    state = ui.wait_playable()
    assert state["note"] in ("playing", "ended"), f"{fmt}: the browser cannot play the result: {state}"
    assert not ui.error(), ui.error()
    assert abs(state["duration"] - sent["json"]["duration_s"]) < 0.1, (state, sent["json"]["duration_s"])
    assert ui.canvas_coverage() > 0.8, f"{fmt}: waveform not drawn"
    link = ui.el("download")
    assert link.is_displayed()
    ext = {"mulaw": "wav", "alaw": "wav", "ulaw_raw": "ulaw", "alaw_raw": "alaw", "opus": "ogg"}.get(fmt, fmt)
    assert link.get_attribute("download") == f"speech.{ext}"
    data = ui.download(tmp_path)
    audio = sent["json"]["audio_base64"]
    assert len(data) == audio["bytes"] and list(data[:16]) == audio["head"], (
        "the download is not the API's audio"
    )
    if fmt in MAGIC:
        assert data.startswith(MAGIC[fmt]), data[:8]


# ---------------------------------------------------------------------------------------------- banner
def test_random_weights_banner_follows_api_voices(ui: WebUI, webui_url: str) -> None:
    """The tiny test model is random: the banner is up. The same page told weights are real shows none."""
    info = _voices_info(ui)
    assert info["random_weights"] is True
    banner = ui.el("banner")
    assert banner.is_displayed()
    assert "Random weights: audio is noise" in banner.text and "TTS_MODEL_DIR" in banner.text
    sent = ui.synthesize()
    assert sent["randomHeader"] == "true"
    ui.screenshot("webui-random-banner.png")

    driver = ui.driver
    patch = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "window.__ttsVoicesOverride = {random_weights: false};"},
    )
    try:
        page = _open(driver, webui_url)
        voices_call = page.js("return window.__tts.requests.find(r => r.url.endsWith('api/voices'))")
        assert voices_call["status"] == 200
        assert not page.el("banner").is_displayed()
        assert "random" not in page.el("model-version").text
        sent = page.synthesize()  # the page still works; the banner stays down
        assert sent["status"] == 200 and not page.el("banner").is_displayed()
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", patch)
    page = _open(driver, webui_url)
    assert page.el("banner").is_displayed()


# ---------------------------------------------------------------------------------------------- SSML
_EXAMPLE_CHECKS = {
    "验证码": ["三", "八", "六", "二", "零", "四"],  # digit by digit
    "电话": ["幺", "三", "八", "零", "零", "幺", "三", "八"],  # telephone: 1 read as 幺
    "金额": ["一", "千", "二", "百", "八", "十", "八", "元", "五", "角"],
    "日期": ["二", "零", "二", "四", "年", "八", "月", "十", "八", "日"],
}


def _contains_run(seq: list[str], run: list[str]) -> bool:
    return any(seq[i : i + len(run)] == run for i in range(len(seq) - len(run) + 1))


def test_ssml_examples_synthesise(ui: WebUI) -> None:
    labels = ui.js("return [...document.querySelectorAll('#examples .chip')].map(b => b.dataset.example)")
    assert len(labels) >= 6, labels
    for label in labels:
        ui.js("document.querySelector(`#examples .chip[data-example='${arguments[0]}']`).click()", label)
        text = ui.el("text").get_attribute("value")
        assert text.startswith("<speak>") and text.endswith("</speak>"), text
        assert "SSML" in ui.el("kind").text
        sent = ui.synthesize()
        assert sent["status"] == 200 and not ui.error(), (label, ui.error())
        assert sent["body"]["text"] == text
        syllables = [t["text"] for t in sent["json"]["timestamps"]]
        assert ui.js("return document.querySelectorAll('#syllables .syl').length") == len(syllables)
        for key, run in _EXAMPLE_CHECKS.items():
            if label.startswith(key):
                assert _contains_run(syllables, run), (label, syllables)
        if "情感" in label:
            emotions = {u["emotion"] for u in sent["json"]["units"]}
            assert {"happy", "sad"} <= emotions, sent["json"]["units"]
    labels_text = " ".join(labels)
    for topic in ("订单", "验证码", "金额", "日期", "电话", "停顿"):
        assert topic in labels_text


# ---------------------------------------------------------------------------------------------- streaming
_STREAM_WATCH_JS = """
window.__streamWatch = [];
const watch = setInterval(() => {
  if (typeof wave === "undefined" || !wave) return;
  const ttfa = document.getElementById("m-ttfa").textContent;
  window.__streamWatch.push({len: wave.length, final: wave.final, ttfa});
  if (wave.final) clearInterval(watch);
}, 15);
"""


def test_streaming_plays_progressively_and_reports_ttfa(ui: WebUI, tmp_path: Path) -> None:
    ui.type_text(LONG_TEXT)
    ui.set_stream(True)
    assert not ui.el("format").is_enabled()  # a stream is PCM for Web Audio
    ui.js(_STREAM_WATCH_JS)
    sent = ui.synthesize()
    assert not ui.error(), ui.error()
    assert sent["status"] == 200
    assert sent["body"]["stream"] is True and sent["body"]["format"] == "pcm", sent
    assert "首包 first audio" in ui.status(), ui.status()
    ttfa, total = _ms(ui.metric("ttfa")), _ms(ui.metric("total"))
    assert 0 < ttfa <= total, (ttfa, total)
    audio_s = _seconds(ui.metric("audio"))
    assert float(ui.metric("rtf").split()[0]) == pytest.approx(total / 1000 / audio_s, rel=0.05, abs=0.002)
    print(
        f"stream: first audio {ttfa:.0f} ms, total {total:.0f} ms, {audio_s:.2f} s audio,"
        f" RTF {ui.metric('rtf')}"
    )

    # The waveform grew while chunks arrived: several partial lengths before the final one.
    watch = ui.js("return window.__streamWatch")
    partial = sorted({w["len"] for w in watch if not w["final"] and w["len"] > 0})
    assert len(partial) >= 2, f"waveform did not grow progressively: {watch[:5]}…"
    assert any(w["ttfa"] != "–" for w in watch if not w["final"]), "TTFA shown only after the stream ended"
    assert ui.canvas_coverage() > 0.8

    web_audio = ui.js(
        "const t = window.__tts; return {started: t.sourcesStarted,"
        " states: [...new Set(t.contexts)].map(c => c.state)}"
    )
    assert web_audio["started"] >= 2, web_audio
    assert web_audio["states"] == ["running"], f"Web Audio context not playing: {web_audio}"
    assert "no timestamps" in ui.el("syllables").text

    # The recording assembled from the stream is offered and plays; same length as the non-streamed result.
    state = ui.wait_playable()
    assert state["note"] in ("playing", "ended"), state
    assert ui.el("download").get_attribute("download") == "speech.wav"
    data = ui.download(tmp_path)
    assert data.startswith(b"RIFF") and abs((len(data) - 44) / 2 / 16000 - audio_s) < 0.01
    ui.screenshot("webui-streaming.png")

    ui.set_stream(False)
    ui.choose("format", "wav")
    batch = ui.synthesize()
    assert abs(batch["json"]["duration_s"] - audio_s) < 0.02, (batch["json"]["duration_s"], audio_s)
    # A second streamed synthesis reuses the page's audio output.
    ui.set_stream(True)
    ui.synthesize()
    assert not ui.error(), ui.error()
    assert ui.js("return new Set(window.__tts.contexts).size") == 1


# ---------------------------------------------------------------------------------------------- errors
def test_errors_are_shown(ui: WebUI) -> None:
    limit = _voices_info(ui)["limits"]["max_text_chars"]
    assert int(ui.el("text").get_attribute("maxlength")) == limit
    assert not ui.el("error").is_displayed()

    ui.type_text("")
    ui.synthesize()
    assert "422" in ui.error() and "text" in ui.error(), ui.error()
    assert ui.audio_src() == ""

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

    # Broken SSML: the parser's reason reaches the user.
    ui.type_text('<speak>您好<foo bar="1"/></speak>')
    ui.synthesize()
    assert "400" in ui.error() and "<foo>" in ui.error(), ui.error()

    # A combination the controls allow but the service refuses (Opus has no 22.05 kHz).
    ui.type_text(TEXT)
    ui.choose("format", "opus")
    ui.choose("rate", "22050")
    ui.synthesize()
    assert "400" in ui.error() and "unsupported_format" in ui.error(), ui.error()
    ui.screenshot("webui-error.png")

    # Audio the browser cannot decode is reported, not left as a silent, dead player.
    ui.js("offerDownload(new Blob(['not audio'], {type: 'audio/wav'}), 'wav')")
    ui.wait.until(lambda _: "cannot play" in ui.error(), "undecodable audio raised no visible error")

    # A good request afterwards clears the error.
    ui.choose("rate", "")
    ui.synthesize()
    assert ui.error() == ""
    assert ui.wait_playable()["note"] in ("playing", "ended")


# ---------------------------------------------------------------------------------------------- screenshot
def test_screenshot_of_a_result(ui: WebUI) -> None:
    """The page as a user sees it after an SSML example, paused mid-sentence (artifact: webui.png)."""
    ui.js("document.querySelectorAll('#examples .chip')[0].click()")
    ui.choose("emotion", "happy")
    ui.slide("speed", -2)
    sent = ui.synthesize()
    assert sent["status"] == 200 and not ui.error(), ui.error()
    ts = sent["json"]["timestamps"]
    middle = ts[len(ts) // 2]
    ui.wait_playable()
    ui.js(
        "const a = document.getElementById('player'); a.pause(); a.currentTime = arguments[0];",
        (middle["start_s"] + middle["end_s"]) / 2,
    )
    ui.wait.until(
        lambda _: ui.js("return document.querySelectorAll('#syllables .syl.active').length") == 1,
        "no syllable highlighted after seeking",
    )
    height = ui.js("return document.documentElement.scrollHeight")
    ui.driver.set_window_size(1000, height + 140)  # the whole page: window chrome is not part of the viewport
    ui.js("window.scrollTo(0, 0)")
    path = ui.screenshot("webui.png")
    print(f"screenshot: {path}")
