"""Lina-Speech: the codec language model (no serving code here)."""

from .config import BOS, EOS, N_SPECIAL_AUDIO, PAD, GLAConfig, LinaConfig, config_from_state_dict
from .cross_attention import TextContext
from .gla import GLAState
from .lina import LinaModel
from .loading import cast_weights, load_lina, model_from_state_dict, read_checkpoint, save_safetensors
from .state import InitialState, LinaState, SpeakerState, load_speaker_state

__all__ = [
    "BOS",
    "EOS",
    "N_SPECIAL_AUDIO",
    "PAD",
    "GLAConfig",
    "GLAState",
    "InitialState",
    "LinaConfig",
    "LinaModel",
    "LinaState",
    "SpeakerState",
    "TextContext",
    "cast_weights",
    "config_from_state_dict",
    "load_lina",
    "load_speaker_state",
    "model_from_state_dict",
    "read_checkpoint",
    "save_safetensors",
]
