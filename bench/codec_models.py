"""Codecs for the codec benchmarks: the fixture model and a full-size model with random weights.

The random full-size model follows the recipe the fixture README gives for its seeded tiny
model (weights scaled by fan-in, norm gains near 1, head bias -0.5 on the log-magnitude), so
its output is audio-like in level rather than silent or clipped. It is NOT a trained codec:
numbers measured on it show how the architecture reacts to windowing, not perceived quality.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from wyoming_lina.codec import WavTokenizer, WavTokenizerConfig, load_codec

FIXTURE_DIR = (
    Path(os.environ.get("WYOMING_LINA_FIXTURES", Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"))
    / "wavtokenizer-tiny"
)


def fixture_codec(device: str = "cpu", dtype: torch.dtype | None = None) -> WavTokenizer:
    if not (FIXTURE_DIR / "model.ckpt").is_file():
        raise SystemExit(f"fixture not found: {FIXTURE_DIR} (set WYOMING_LINA_FIXTURES to the fixtures folder)")
    return load_codec(FIXTURE_DIR / "config.yaml", FIXTURE_DIR / "model.ckpt", device=device, dtype=dtype)


@torch.no_grad()
def random_codec(config: WavTokenizerConfig | None = None, seed: int = 0) -> WavTokenizer:
    """A codec of the given (default: full) size with seeded random weights, float32 on CPU."""
    torch.manual_seed(seed)
    codec = WavTokenizer(config or WavTokenizerConfig())
    for name, p in codec.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if name.startswith("feature_extractor."):
            if leaf == "weight_g":
                continue  # set from ||v|| below
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.normal_(0.0, 1.0 / math.sqrt(fan_in) if p.dim() > 1 else 0.05)
        elif name.startswith("head.out"):
            if leaf == "weight":
                p.normal_(0.0, 0.6 / math.sqrt(p.shape[1]))
            else:
                half = p.shape[0] // 2
                p.normal_(0.0, 0.1)
                p[:half] -= 0.5
        elif leaf == "gamma":
            p.uniform_(0.3, 0.8)
        elif ".scale." in name or (p.dim() == 1 and leaf == "weight"):  # AdaLN scale, LN/GN gains
            p.normal_(0.0, 0.15).add_(1.0)
        elif ".shift." in name or leaf == "bias":
            p.normal_(0.0, 0.1)
        else:
            fan_in = p[0].numel()
            p.normal_(0.0, 0.8 / math.sqrt(fan_in))
    for module in codec.modules():
        if hasattr(module, "weight_g"):
            v = module.weight_v
            module.weight_g.copy_(v.norm(dim=tuple(range(1, v.dim())), keepdim=True) * 1.2)
    codec.quantizer.vq.layers[0]._codebook.embed.normal_()
    return codec.eval().requires_grad_(False)


def move(codec: WavTokenizer, device: str, dtype: torch.dtype | None = None) -> WavTokenizer:
    codec = codec.to(device).set_backbone_dtype(dtype)
    return codec


def token_streams(num_codes: int, codebook_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Test code streams: i.i.d. random tokens, and 'bursty' (random runs + held-token pauses)."""
    g = torch.Generator().manual_seed(seed)
    iid = torch.randint(0, codebook_size, (num_codes,), generator=g)
    bursty = iid.clone()
    t = 0
    while t < num_codes:  # 0.5-1.5 s of speech-like tokens, then 0.2-0.6 s of one held token
        t += int(torch.randint(38, 113, (1,), generator=g))
        pause = int(torch.randint(15, 45, (1,), generator=g))
        bursty[t : t + pause] = int(torch.randint(0, codebook_size, (1,), generator=g))
        t += pause
    return {"iid": iid, "bursty": bursty}
