"""The studio's pure decisions: who may change things, the page's base under ingress, and which
voice is the default (--voice > the studio's choice > the built-in voice)."""

from __future__ import annotations

import pytest

from wyoming_lina.errors import UnknownVoiceError
from wyoming_lina.studio.security import bearer_allowed, ingress_base, origin_allowed
from wyoming_lina.voices.preferences import DefaultingVoices, VoicePreferences
from wyoming_lina.voices.store import VoiceStore


@pytest.mark.parametrize(
    "origin, host, forwarded, allowed",
    [
        (None, "studio:8080", None, True),  # not a web page: curl, an automation
        ("http://studio:8080", "studio:8080", None, True),
        ("http://STUDIO:8080", "studio:8080", None, True),
        ("https://studio", "studio:443", None, True),
        ("http://studio", "studio", None, True),
        ("http://evil.example", "studio:8080", None, False),
        ("http://studio:9999", "studio:8080", None, False),  # another port is another origin
        ("http://studio.evil.example:8080", "studio:8080", None, False),
        ("null", "studio:8080", None, False),  # sandboxed frames, files
        ("file://", "studio:8080", None, False),
        ("https://ha.local:8123", "172.30.33.2:8099", "ha.local:8123", True),  # behind ingress / a proxy
        ("https://evil.example", "172.30.33.2:8099", "ha.local:8123", False),
        ("http://[::1]:8080", "[::1]:8080", None, True),
        ("http://studio:8080", None, None, False),
    ],
)
def test_origin(origin, host, forwarded, allowed):
    assert origin_allowed(origin, host, forwarded) is allowed


def test_bearer_token():
    assert bearer_allowed(None, None) and bearer_allowed("Bearer x", None)
    assert bearer_allowed("Bearer s3cret", "s3cret") and bearer_allowed("bearer s3cret", "s3cret")
    for header in (None, "", "Bearer", "Bearer wrong", "Basic s3cret", "s3cret"):
        assert not bearer_allowed(header, "s3cret"), header


def test_ingress_base():
    assert ingress_base("/api/hassio_ingress/AbC-123_x") == "/api/hassio_ingress/AbC-123_x/"
    assert ingress_base("/lina/") == "/lina/"
    for bad in (None, "", "lina", '/"><script>', "//evil.example", "/a/../b", "/a b"):
        assert ingress_base(bad) is None, bad


def test_default_voice_precedence(tmp_path, lina_dir, model):
    store = VoiceStore(tmp_path, model=model)
    for name in ("builtin", "alice", "bob"):
        store.add(name, state=lina_dir / "speaker_state.safetensors")
    preferences = VoicePreferences(tmp_path)
    voices = DefaultingVoices(store, preferences, fixed=None, fallback="builtin")
    assert voices.get("").name == "builtin" and voices.default_name() == "builtin"
    preferences.set_default_voice("alice")
    assert voices.get("").name == "alice" and voices.get(None).name == "alice" and voices.default_name() == "alice"
    assert VoicePreferences(tmp_path).default_voice() == "alice"  # kept on disk, read by a restarted server
    assert voices.get("bob").name == "bob"  # a named voice is never replaced
    fixed = DefaultingVoices(store, preferences, fixed="bob", fallback="builtin")
    assert fixed.get("").name == "bob" and fixed.default_name() == "bob"  # --voice wins
    store.remove("alice")  # the chosen voice is gone: the built-in voice speaks, nobody gets an error
    assert voices.get("").name == "builtin" and voices.default_name() == "builtin"
    with pytest.raises(UnknownVoiceError):
        voices.get("alice")
    (tmp_path / "settings.yaml").write_text("default_voice: [not, a, name]\n")
    assert voices.get("").name == "builtin"


def test_loaded_default_voice_follows_the_choice(tmp_path, lina_dir, model):
    """What the event loop may take without reading a file (``loaded``) is always what ``get``
    gives; a changed choice makes it say None until ``get`` has read the settings again."""
    store = VoiceStore(tmp_path, model=model)
    for name in ("builtin", "alice"):
        store.add(name, state=lina_dir / "speaker_state.safetensors")
    preferences = VoicePreferences(tmp_path)
    voices = DefaultingVoices(store, preferences, fixed=None, fallback="builtin")
    assert voices.loaded("") is None  # nothing loaded yet
    builtin = voices.get("")
    assert voices.loaded("") is builtin and voices.loaded(None) is builtin
    preferences.set_default_voice("alice")
    assert voices.loaded("") is None
    alice = voices.get("")
    assert alice.name == "alice" and voices.loaded("") is alice
    assert voices.loaded("builtin") is builtin  # a named voice is never replaced
    (tmp_path / "settings.yaml").unlink()
    assert voices.loaded("") is None and voices.get("") is builtin and voices.loaded("") is builtin
    fixed = DefaultingVoices(store, preferences, fixed="alice", fallback="builtin")
    assert fixed.loaded("") is alice  # --voice wins
