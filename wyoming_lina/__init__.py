"""wyoming-lina: Lina-Speech voice-cloning TTS served to Home Assistant over Wyoming."""

__version__ = "0.1.0"
