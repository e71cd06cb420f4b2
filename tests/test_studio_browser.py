"""The studio page in a real browser: Debian's headless Chromium driven by Playwright, against
the real server (fixture models, CPU) and a real speech-to-text server (pocketsphinx).

The microphone is Chromium's fake capture device playing an espeak-ng clip, so "record with
the microphone" records real speech through getUserMedia and the page's own WAV writer.
Set STUDIO_SCREENSHOT=path.png to keep a picture of the page (docs/studio.png is made so).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import soundfile
from speech_support import asr_server, require, write_speech  # noqa: F401
from studio_support import start_studio

CHROMIUM = "/usr/bin/chromium"
CLIP_TEXT = "Please turn on the kitchen lights and close the garage door."


@pytest.fixture(scope="module")
def studio(tmp_path_factory, lina_dir, codec_dir, asr_server):  # noqa: F811
    server = start_studio(tmp_path_factory.mktemp("browser"), lina_dir, codec_dir, "--asr-uri", asr_server.uri)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require(shutil.which("chromium") is not None or Path(CHROMIUM).exists(), "chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright")
    microphone = write_speech(
        tmp_path_factory.mktemp("mic") / "mic.wav", "Hello, this is my voice for the whole house."
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}", "--autoplay-policy=no-user-gesture-required",
            ],
        )  # fmt: skip
        yield browser
        browser.close()


def test_the_page_makes_hears_and_removes_voices(studio, browser, tmp_path):
    clip = write_speech(tmp_path / "kitchen.wav", CLIP_TEXT)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.grant_permissions(["microphone"], origin=studio.url.rstrip("/"))
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.on("dialog", lambda dialog: dialog.accept())  # "Remove the voice ...?"
    page.goto(studio.url)
    page.wait_for_selector('#voices li[data-voice="fixture"]')
    assert page.inner_text("#status") == "Ready"

    # add a voice by uploading a clip with its transcript
    page.fill("#add-name", "uploaded")
    page.set_input_files("#add-file", str(clip))
    page.fill("#add-text", CLIP_TEXT)
    page.click("#add-submit")
    page.wait_for_selector('#voices li[data-voice="uploaded"]')
    assert "was added" in page.inner_text("#notice")

    # record one with the (fake) microphone; the words come from speech-to-text
    page.fill("#add-name", "recorded")
    page.click("#record")
    page.wait_for_timeout(4500)
    page.click("#record")
    page.wait_for_selector("#clip-player:not([hidden])")
    page.click("#add-submit")
    page.wait_for_selector('#voices li[data-voice="recorded"]', timeout=60_000)
    assert "Speech-to-text heard" in page.inner_text("#notice")
    recorded = studio.data / "voices" / "recorded"
    words = (recorded / "prompt.txt").read_text().split()
    assert len(set(words) & {"hello", "this", "is", "my", "voice", "for", "the", "whole", "house"}) >= 3, words
    assert soundfile.info(str(recorded / "prompt.wav")).duration > 1.5

    # the same name again: refused, in words
    page.fill("#add-name", "recorded")
    page.set_input_files("#add-file", str(clip))
    page.fill("#add-text", CLIP_TEXT)
    page.click("#add-submit")
    page.wait_for_function("() => document.getElementById('notice').textContent.includes('already a voice called')")
    assert page.is_visible("#notice")

    # preview a voice and hear it play
    page.click('#voices li[data-voice="uploaded"] >> text=Listen')
    page.wait_for_function(
        "() => { const a = document.getElementById('player'); return a.currentTime > 0 || a.ended; }", timeout=60_000
    )
    assert page.eval_on_selector("#player", "a => a.duration") > 0

    # make it the default, then remove the other one
    page.click('#voices li[data-voice="recorded"] >> text=Make default')
    page.wait_for_selector('#voices li[data-voice="recorded"] .badge.default')
    page.click('#voices li[data-voice="uploaded"] >> text=Remove')
    page.wait_for_selector('#voices li[data-voice="uploaded"]', state="detached")
    assert not (studio.data / "voices" / "uploaded").exists()
    assert problems == [], problems

    if os.environ.get("STUDIO_SCREENSHOT"):
        page.reload()
        page.wait_for_selector('#voices li[data-voice="recorded"]')
        page.screenshot(path=os.environ["STUDIO_SCREENSHOT"], full_page=True)
    context.close()
