"""Numbers several packages share, each defined once here.

Free of torch and of the other packages, so the command line (``--help``) imports it cheaply.
"""

SAMPLE_RATE = 24000  # WavTokenizer's audio rate (Hz)
SAMPLES_PER_FRAME = 320  # one codec code per 320 samples
FRAMES_PER_SECOND = SAMPLE_RATE // SAMPLES_PER_FRAME  # 75 codes per second of speech

MAX_BATCH = 256  # most rows the engine generates together (the largest CUDA-graph bucket)
MAX_QUEUE = 1024  # most sentences waiting for the engine
