"""Numbers several packages share, each defined once here.

Free of torch and of the other packages, so the command line (``--help``) imports it cheaply.
"""

SAMPLE_RATE = 24000  # WavTokenizer's audio rate (Hz)
SAMPLES_PER_FRAME = 320  # one codec code per 320 samples
FRAMES_PER_SECOND = SAMPLE_RATE // SAMPLES_PER_FRAME  # 75 codes per second of speech

MAX_BATCH = 256  # most rows the engine generates together (the largest CUDA-graph bucket)
MAX_QUEUE = 1024  # most sentences waiting for the engine
CPU_QUANT = ("q8", "none")  # the CPU's decode step: ONNX Runtime, 8-bit weights (model/cpu_step.py); float32

MAX_SENTENCE_CHARS = 200  # longest piece of normalised text one generation row speaks
MAX_TEXT_TOKENS = 512  # longest text (in tokens) the engine takes: the largest CUDA-graph text bucket
# A row's text is "[BOS]" + voice transcript + " " + sentence piece + "[EOS]": three tokens
# besides the two texts (the tokenizer splits at spaces, so the space is a token of its own).
TEXT_FRAME_TOKENS = 3


def max_transcript_tokens(model_text_len: int | None = None) -> int:
    """Tokens a prompt voice's transcript may take so that any sentence piece still fits after it.

    The engine takes at most ``min(model_text_len, MAX_TEXT_TOKENS)`` tokens per row (the model's
    position table; the CUDA graphs' largest text bucket), and a piece of up to
    ``MAX_SENTENCE_CHARS`` characters takes at most one token per character (the tokenizer's
    pieces are characters and merges of them). 309 tokens with the published model."""
    limit = MAX_TEXT_TOKENS if model_text_len is None else min(model_text_len, MAX_TEXT_TOKENS)
    return max(0, limit - TEXT_FRAME_TOKENS - MAX_SENTENCE_CHARS)
