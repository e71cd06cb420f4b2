"""What every voice command needs: the data dir, the model files, the store, speech-to-text.

Model files not given default to the converted ones in the data dir (as for the server);
the loaders import torch only when a command really needs a model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...data_dir import default_data_dir, model_paths
from ...errors import VoiceError

MakeTranscriber = Callable[[str], Callable]


def option(args, name: str):
    """An option's value, or None when neither parser put it in ``args``."""
    return getattr(args, name, None)


def data_dir(args) -> Path:
    return Path(option(args, "data_dir") or default_data_dir()).expanduser()


def model_files_from_data_dir(args) -> None:
    """Model files not given default to the converted ones in the data dir, as for the server.
    Remembers which were given (the tuning resume hint repeats only those)."""
    args.given_model_files = [o for o in ("lina_checkpoint", "codec_checkpoint", "tokenizer") if option(args, o)]
    for name, path in model_paths(data_dir(args)).items():
        if not option(args, name) and path.is_file():
            setattr(args, name, path)


def device(args) -> str:
    import torch

    chosen = option(args, "device")
    if chosen:
        return chosen
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_codec(args):
    if not option(args, "codec_checkpoint"):
        return None
    from ...codec import load_codec as load

    return load(option(args, "codec_config"), args.codec_checkpoint, device=device(args))


def load_model(args, dtype=None):
    if not option(args, "lina_checkpoint"):
        return None
    from ...model import load_lina

    return load_lina(args.lina_checkpoint, device=device(args), dtype=dtype)


def load_tokenizer(args):
    if not option(args, "tokenizer"):
        return None
    from ...text import LinaTokenizer

    return LinaTokenizer(args.tokenizer)


def open_store(args, codec=None, model=None, tokenizer=None):
    from ..store import VoiceStore

    return VoiceStore(
        data_dir(args),
        codec=codec,
        model=model,
        config_path=option(args, "voices_file"),
        tokenizer=tokenizer,
        log_problems=False,  # list and show print them
    )


def transcriber(args, make_transcriber: MakeTranscriber | None, why: str):
    """``transcribe(samples, rate) -> text`` through --asr-uri (in the voice's language)."""
    uri = option(args, "asr_uri")
    if not uri:
        raise VoiceError(f"{why}: give --asr-uri tcp://HOST:PORT (your Wyoming speech-to-text server)")
    if make_transcriber is None:
        raise VoiceError("speech-to-text needs the wyoming-lina command: wyoming-lina voice ... --asr-uri URI")
    transcribe = make_transcriber(uri)
    language = (args.language or [None])[0]
    return lambda samples, rate: transcribe(samples, rate, language)
