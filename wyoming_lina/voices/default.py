"""The built-in ``default`` voice: one speaker, the same in every sentence, request and restart.

Without a prompt or a tuned state, Lina samples a new random speaker for every sentence.
The default voice pins one down: ONCE, the plain model speaks a fixed sentence with a fixed
seed and fixed sampling settings; the codes it produced, with that sentence as transcript,
become a prompt voice in the data dir (plus their decoding, ``prompt.wav``, for listening).
From then on the voice is read from disk like any other, so it never changes, not even
when the sampling code or the device changes (a GPU would sample a different speaker from
the same seed). Remove it (``voice remove default``) to have it made again at the next start.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch

from ..engine.lengths import DEFAULT_FRAMES_PER_CHAR
from ..errors import VoiceError
from .voice import Voice

_LOGGER = logging.getLogger(__name__)
DEFAULT_VOICE = "default"
DEFAULT_SENTENCE = "Hello! This is the voice of your home, ready when you are."


@dataclass(frozen=True)
class DefaultVoiceRecipe:
    """How the default voice is sampled (recorded in its voice.yaml)."""

    text: str = DEFAULT_SENTENCE
    seed: int = 1105  # attempt i samples with seed + i
    top_k: int = 50
    temperature: float = 0.8  # a little below upstream's 1.0: a steadier, cleaner speaker
    max_seconds: float = 8.0  # below the usual ceiling: a take that has not ended by now is dropped
    attempts: int = 4  # tries (next seed) when the sentence does not end by max_seconds


@torch.inference_mode()
def generate_prompt_codes(
    model, tokenizer, recipe: DefaultVoiceRecipe = DefaultVoiceRecipe()
) -> tuple[torch.Tensor, int, bool]:
    """Sample the recipe's sentence from the plain model: (codes [T] on CPU, seed used, ended by EOS).

    The length rule is every generation's (``engine.lengths``, ``engine.sampling``): PAD and BOS
    are never sampled, EOS not before the floor for this sentence at the default speaking rate,
    and no take is longer than its ceiling (nor ``recipe.max_seconds``)."""
    from ..engine.lengths import FRAMES_PER_SECOND, frame_bounds, spoken_chars
    from ..engine.sampling import sample_tokens
    from ..model import BOS, EOS, N_SPECIAL_AUDIO
    from ..text import normalize_text

    device = model.device
    spoken = normalize_text(recipe.text, tokenizer)
    ids = tokenizer.encode(spoken)
    ctx = model.encode_text(torch.tensor([ids], device=device))
    bounds = frame_bounds(spoken_chars(spoken), None, int(recipe.max_seconds * FRAMES_PER_SECOND))
    options = {
        "top_k": torch.tensor([recipe.top_k], device=device),
        "top_p": torch.tensor([1.0], device=device),
        "temperature": torch.tensor([recipe.temperature], device=device),
        "min_frames": torch.tensor([bounds.min_frames], device=device),
    }
    codes: list[int] = []
    for attempt in range(recipe.attempts):
        seed = recipe.seed + attempt
        state = model.init_state(1)
        token = torch.tensor([BOS], device=device)
        codes, ended = [], False
        for t in range(bounds.max_frames):
            logits, state = model.step(ctx, token, state)
            token = sample_tokens(
                logits,
                seeds=torch.tensor([seed], device=device),
                counters=torch.tensor([t], device=device),
                max_k=recipe.top_k,
                **options,
            )
            value = int(token)
            if value == EOS:
                ended = True
                break
            codes.append(value - N_SPECIAL_AUDIO)
        if ended:
            return torch.tensor(codes, dtype=torch.long), seed, True
        _LOGGER.info(
            "default voice: seed %d did not finish the sentence in %.0f s; trying the next", seed, recipe.max_seconds
        )
    return torch.tensor(codes, dtype=torch.long), recipe.seed + recipe.attempts - 1, False


def ensure_default_voice(
    store,
    model=None,
    codec=None,
    tokenizer=None,
    *,
    name: str = DEFAULT_VOICE,
    recipe: DefaultVoiceRecipe = DefaultVoiceRecipe(),
) -> Voice:
    """The ``default`` voice: read from the store, or made once (about ``recipe.max_seconds``
    of generation at most per attempt) and stored. Call at start-up, before serving.

    Model, codec and tokenizer default to the store's. A ``default`` voice that exists but
    cannot be loaded raises VoiceError (the server should not start with a broken default).
    Two servers starting together on an empty data dir both make it; the folder of the first
    to finish stays, and the other reads it (both then speak with the same voice)."""
    if name in store:
        return store.get(name)
    model = model if model is not None else store.model
    codec = codec if codec is not None else store.codec
    tokenizer = tokenizer if tokenizer is not None else store.tokenizer
    if model is None or tokenizer is None:
        raise VoiceError("making the default voice needs the model and the tokenizer")
    _LOGGER.info("making the default voice (once): sampling %r with seed %d", recipe.text, recipe.seed)
    codes, seed, ended = generate_prompt_codes(model, tokenizer, recipe)
    if not ended:
        _LOGGER.warning(
            "default voice: no attempt ended its sentence within %.0f s; keeping the last one", recipe.max_seconds
        )
    samples = None
    if codec is not None:
        with torch.inference_mode():
            samples = codec.decode(codes[None].to(codec.device))[0].float().cpu().numpy()
    source = (
        f"generated once by wyoming-lina: the plain model speaking a fixed sentence "
        f"(seed {seed}, top-k {recipe.top_k}, temperature {recipe.temperature})"
    )
    extra = {
        "generated": {**asdict(recipe), "seed_used": seed, "ended_by_eos": ended, "frames": int(codes.numel())},
        # the built-in voice speaks at the documented default rate (its take was bounded by it)
        "frames_per_char": DEFAULT_FRAMES_PER_CHAR,
    }
    store.add_generated(
        name,
        codes,
        recipe.text,
        samples=samples,
        languages=("en",),
        description="Built-in voice",
        source=source,
        extra=extra,
        exist_ok=True,  # a server started at the same moment made it first: use that one
    )
    return store.get(name)
