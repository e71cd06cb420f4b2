"""How many bytes the model's and the codec's tensors hold after the server's preparation, counted
once per storage, against the bytes of their parameters and checkpoint buffers alone.

    python bench/weight_memory.py [--dtype bfloat16] [--fixtures ../shared/fixtures]

Runs on the CPU, no GPU needed: the full-size random Lina model (``full_size.py``) and codec
(``codec_models.py``) prepared as ``serve`` prepares them on CUDA (``cast_weights`` to bf16 and
``fuse_projections``; the codec's backbone in bf16 and ``StreamingDecoder``'s layer-scale folding
and conv-weight layout). ``held`` counts every tensor reachable from the modules (parameters,
buffers, tensor attributes such as ``fused_in``) once per underlying storage, so a fused copy that
the originals are views of is not counted twice; ``weights`` is what the parameters and the
state_dict's buffers alone take. ``held - weights`` is what preparation adds on top.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


def _tensors(module: nn.Module):
    """Every tensor a module tree holds: parameters, buffers and plain tensor attributes."""
    for sub in module.modules():
        yield from (t for t in sub._parameters.values() if t is not None)
        yield from (t for t in sub._buffers.values() if t is not None)
        yield from (t for t in vars(sub).values() if isinstance(t, torch.Tensor))


def held_bytes(*modules: nn.Module) -> int:
    """Bytes of the distinct storages (per device) under every tensor the modules hold."""
    storages = {}
    for module in modules:
        for t in _tensors(module):
            storage = t.untyped_storage()
            storages[(t.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def weight_bytes(*modules: nn.Module) -> int:
    """Bytes of the parameters and the persistent (state_dict) buffers, each tensor's own."""
    tensors = {}
    for module in modules:
        for sub in module.modules():
            for name, t in list(sub._parameters.items()) + list(sub._buffers.items()):
                if t is not None and name not in sub._non_persistent_buffers_set:
                    tensors[id(t)] = t
    return sum(t.numel() * t.element_size() for t in tensors.values())


def prepare_model(model, dtype: torch.dtype):
    """As ``load_lina(..., dtype)`` and ``Engine.create`` prepare the model on CUDA."""
    from wyoming_lina.model import cast_weights

    if dtype != torch.float32:
        cast_weights(model, dtype)
    return model.fuse_projections()


def prepare_codec(codec, dtype: torch.dtype):
    """As ``load_codec(..., dtype)`` and ``StreamingDecoder`` prepare the codec on CUDA."""
    from wyoming_lina.engine import StreamingDecoder

    StreamingDecoder(codec.set_backbone_dtype(dtype))
    return codec


def report(name: str, module: nn.Module) -> tuple[int, int]:
    held, weights = held_bytes(module), weight_bytes(module)
    print(f"{name}: held {held:,} B ({held / 2**20:.1f} MiB), weights {weights:,} B, extra {held - weights:,} B")
    return held, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--fixtures", type=Path, default=None, help="shared/fixtures (the full-size key manifest)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    from codec_models import random_codec
    from full_size import random_full_size_lina

    manifest = args.fixtures / "lina-tiny/full-size-keys.json" if args.fixtures else None
    model = random_full_size_lina(manifest=manifest)
    report(f"model {args.dtype}, loaded", model)
    report(f"model {args.dtype}, prepared", prepare_model(model, dtype))
    del model
    codec = random_codec()
    report(f"codec {args.dtype}, loaded", codec)
    report(f"codec {args.dtype}, prepared", prepare_codec(codec, dtype))


if __name__ == "__main__":
    main()
