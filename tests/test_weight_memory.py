"""After the server's preparation every weight is held once: the fused and padded inference
tensors of the model (``fuse_projections``) and the codec's folded and channels-last weights
(``StreamingDecoder``) hold the weights they are made of instead of sitting beside them. Counted
as bench/weight_memory.py counts it: every storage reachable from the modules, once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wyoming_lina.codec import load_codec
from wyoming_lina.model import load_lina
from wyoming_lina.model.gla import GatedLinearAttention
from wyoming_lina.model.layers import SwiGLU, aligned_width


def _bench():
    path = Path(__file__).parent.parent / "bench" / "weight_memory.py"
    spec = importlib.util.spec_from_file_location("weight_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture(scope="module")
def vec(lina_dir):
    return load_file(str(lina_dir / "vectors.safetensors"))


def computed_bytes(model) -> int:
    """What fusing adds that no weight holds: the folded decay gates and the zero padding."""
    total = 0
    for m in model.modules():
        if isinstance(m, GatedLinearAttention):
            total += m.fused_in[-m.cfg.key_dim :].numel() * m.fused_in.element_size()
        elif isinstance(m, SwiGLU):
            d, hidden = m.p_out.weight.shape
            pad = aligned_width(hidden) - hidden
            total += (2 * pad * m.p_in.weight.shape[1] + d * pad) * m.padded_in.element_size()
            total += 2 * pad * m.padded_in_bias.element_size()
    head = model.logits_head.weight
    return total + (model.padded_head.shape[0] - head.shape[1]) * head.shape[2] * head.element_size()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_model_holds_each_weight_once(lina_dir, dtype):
    model = load_lina(lina_dir / "model.ckpt", dtype=dtype)
    weights = bench.weight_bytes(model)
    assert bench.held_bytes(model) == weights
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.fuse_projections()
    extra = computed_bytes(model)
    assert 0 < extra < weights // 4
    assert bench.held_bytes(model) == weights + extra
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    gla = next(m for m in model.modules() if isinstance(m, GatedLinearAttention))
    mlp = next(m for m in model.modules() if isinstance(m, SwiGLU))
    storage = gla.fused_in.untyped_storage().data_ptr()
    assert all(p.weight.untyped_storage().data_ptr() == storage for p in (gla.q_proj, gla.g_proj))
    assert mlp.p_out.weight.untyped_storage().data_ptr() == mlp.padded_out.untyped_storage().data_ptr()

    model.fuse_projections()  # again (as after weights changed): still once, the same values
    assert bench.held_bytes(model) == weights + extra
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fused_model_follows_new_weights_when_fused_again(lina_dir, vec):
    """load_state_dict writes into the views (so into the fused tensors); fusing again after it
    recomputes the rest: the same logits as a model loaded with those weights and fused."""
    model = load_lina(lina_dir / "model.ckpt").fuse_projections()
    changed = ("p_in.weight", "p_out.weight", "q_proj.weight", "logits_head.weight")
    other = {k: v * 1.01 if k.endswith(changed) else v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(other)
    model.fuse_projections()
    fresh = load_lina(lina_dir / "model.ckpt")
    fresh.load_state_dict(other)
    fresh.fuse_projections()
    with torch.inference_mode():
        got = model.teacher_forced_logits(vec["text_ids"], vec["audio_in"])
        want = fresh.teacher_forced_logits(vec["text_ids"], vec["audio_in"])
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepared_codec_holds_each_weight_once(codec_dir, dtype):
    codec = load_codec(codec_dir / "config.yaml", codec_dir / "model.ckpt", dtype=dtype)
    weights = bench.weight_bytes(codec)
    head = codec.head.input_dtype_weight  # the bf16 copy of the float32 head weight (istft_head.py)
    copy = 0 if head is None else head.numel() * head.element_size()
    assert (head is None) == (dtype == torch.float32)
    held = bench.held_bytes(codec)
    window = codec.head.istft.window  # (a periodic Hann window: a view of one more sample)
    slack = window.untyped_storage().nbytes() - window.numel() * window.element_size()
    assert held == weights + copy + slack
    bench.prepare_codec(codec, dtype)
    assert bench.held_bytes(codec) == held
