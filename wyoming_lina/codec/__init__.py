"""WavTokenizer codec (24 kHz, 75 codes/s, one 4096-entry codebook): encode, decode, stream.

See docs/codec.md for the API, the streaming decoder and its measured accuracy.
"""

from .audio import pcm_to_float, read_audio, to_codec_rate
from .config import WavTokenizerConfig, read_config
from .loading import load_codec, save_codec_safetensors
from .streaming import CodecStream, StreamingConfig, Window
from .wavtokenizer import WavTokenizer

__all__ = [
    "CodecStream",
    "StreamingConfig",
    "WavTokenizer",
    "WavTokenizerConfig",
    "Window",
    "load_codec",
    "pcm_to_float",
    "read_audio",
    "read_config",
    "save_codec_safetensors",
    "to_codec_rate",
]
