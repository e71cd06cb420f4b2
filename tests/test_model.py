"""The Lina model against upstream-produced fixtures, plus strict loading and state rules."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from wyoming_lina.errors import CheckpointError, VoiceError
from wyoming_lina.model import (
    BOS,
    EOS,
    LinaModel,
    LinaState,
    cast_weights,
    config_from_state_dict,
    load_lina,
    load_speaker_state,
    save_safetensors,
)
from wyoming_lina.model.kernels import CHUNKED_MIN_FRAMES, choose_gla_kernel, chunked_gla, naive_gla

LOGIT_ATOL = 1e-4
STATE_ATOL = 5e-5


@pytest.fixture(scope="module")
def vec(lina_dir):
    return load_file(str(lina_dir / "vectors.safetensors"))


def step_through(model, ctx, tokens, state):
    logits = []
    for t in range(tokens.shape[1]):
        step_logits, state = model.step(ctx, tokens[:, t], state)
        logits.append(step_logits)
    return torch.stack(logits, 1), state


def test_config_is_derived_from_shapes(model):
    cfg = model.config
    assert (cfg.d_model, cfg.n_layer, cfg.gla.heads, cfg.gla.key_dim, cfg.gla.value_dim) == (64, 2, 2, 32, 64)
    assert (cfg.text_layers, cfg.text_heads, cfg.d_blind, cfg.out_vocab, cfg.gla.short_conv) == (2, 2, 64, 67, True)
    assert sum(p.numel() for p in model.parameters()) == 402_998


def test_text_encoder_output(model, vec):
    out = model.text_encoder_output(vec["text_ids"])
    torch.testing.assert_close(out, vec["text_encoder_out"], atol=STATE_ATOL, rtol=0)


def test_parallel_logits_and_loss(model, vec):
    logits = model.teacher_forced_logits(vec["text_ids"], vec["audio_in"])
    torch.testing.assert_close(logits, vec["logits_parallel"], atol=LOGIT_ATOL, rtol=0)
    targets = torch.cat([vec["audio_in"][:, 1:], torch.tensor([[EOS]])], 1)
    loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=BOS)
    torch.testing.assert_close(loss, vec["loss_parallel"], atol=1e-5, rtol=0)


def test_step_logits_and_final_states(model, vec):
    ctx = model.encode_text(vec["text_ids"])
    logits, state = step_through(model, ctx, vec["audio_in"], model.init_state(1))
    torch.testing.assert_close(logits, vec["logits_steps"], atol=LOGIT_ATOL, rtol=0)
    for i, layer in enumerate(state.layers):
        for name in ("S", "conv_q", "conv_k", "conv_v"):
            torch.testing.assert_close(getattr(layer, name), vec[f"state{i}_{name}"], atol=STATE_ATOL, rtol=0)


def test_parallel_pass_leaves_the_same_state_as_stepping(model, vec):
    ctx = model.encode_text(vec["text_ids"])
    par_logits, par_state = model.forward_audio(ctx, vec["audio_in"], model.init_state(1))
    step_logits, step_state = step_through(model, ctx, vec["audio_in"], model.init_state(1))
    torch.testing.assert_close(par_logits, step_logits, atol=1e-4, rtol=0)
    # the parallel pass sums the recurrence in chunks (kernels.chunked_gla), stepping one frame at
    # a time: float32 in another order. S grows to ~10 here, so an absolute 1e-5 alone is at the
    # rounding's edge (1.6e-5 = 1.8e-6 relative on an AMD EPYC); a relative 1e-5 beside it
    for a, b in zip(par_state.layers, step_state.layers):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_speaker_state_initial_state_and_logits(model, vec, lina_dir):
    init = load_speaker_state(lina_dir / "speaker_state.safetensors", model)
    assert len(init.S) == 4
    for i, s0 in enumerate(init.S):
        torch.testing.assert_close(s0, vec[f"ist_init_S{i}"], atol=1e-7, rtol=0)
    ctx = model.encode_text(vec["text_ids"])
    logits, _ = step_through(model, ctx, vec["audio_in"], model.init_state(1, init))
    torch.testing.assert_close(logits, vec["logits_steps_ist"], atol=LOGIT_ATOL, rtol=0)
    parallel = model.teacher_forced_logits(vec["text_ids"], vec["audio_in"], init)
    torch.testing.assert_close(parallel, vec["logits_steps_ist"], atol=LOGIT_ATOL, rtol=0)


def test_greedy_continuation_matches_upstream(model, vec):
    """Prompt prefilled in ONE parallel pass, then greedy steps: upstream's tokens exactly."""
    prompt = vec["prompt_codes"] + 3
    ctx = model.encode_text(vec["text_ids"])
    inputs = torch.cat([torch.tensor([[BOS]]), prompt], 1)  # BOS + all P prompt tokens
    logits, state = model.forward_audio(ctx, inputs, model.init_state(1))
    tokens = logits.argmax(-1)[0].tolist()  # steps 0..P; the last is the first new token
    while tokens[-1] != EOS and len(tokens) < 60:
        step_logits, state = model.step(ctx, torch.tensor([tokens[-1]]), state)
        tokens.append(int(step_logits.argmax(-1)))
    assert tokens == vec["greedy_tokens"][0].tolist()
    codes = (torch.tensor(tokens[1:-1]) - 3).clamp_min(0)  # upstream's post-processing
    assert codes.tolist() == vec["greedy_codes"][0].tolist()


def test_padded_batch_equals_each_row_alone(model, vec):
    """Rows with different text lengths and initial states, prefilled then stepped together."""
    text_a = vec["text_ids"]
    text_b = vec["text_ids"][:, :17].clone()
    text_b[0, -1] = EOS
    mask = torch.zeros(2, text_a.shape[1], dtype=torch.bool)
    mask[0, :] = True
    mask[1, :17] = True
    texts = torch.zeros_like(mask, dtype=torch.long)
    texts[0] = text_a[0]
    texts[1, :17] = text_b[0]
    gen = torch.Generator().manual_seed(0)
    audio = torch.randint(3, model.config.out_vocab, (2, 12), generator=gen)
    audio[:, 0] = BOS

    batch_ctx = model.encode_text(texts, mask)
    logits, state = model.forward_audio(batch_ctx, audio[:, :8], model.init_state(2))
    more, state = step_through(model, batch_ctx, audio[:, 8:], state)
    batch_logits = torch.cat([logits, more], 1)

    for row, text in enumerate((text_a, text_b)):
        alone, _ = model.forward_audio(model.encode_text(text), audio[row : row + 1], model.init_state(1))
        torch.testing.assert_close(batch_logits[row : row + 1], alone, atol=1e-4, rtol=0)


def test_state_select_and_cat_round_trip(model, vec):
    ctx = model.encode_text(vec["text_ids"].repeat(3, 1))
    _, state = model.forward_audio(ctx, vec["audio_in"].repeat(3, 1)[:, :5], model.init_state(3))
    again = LinaState.cat([state.select([0]), state.select([1, 2])])
    assert again.batch_size == 3
    for a, b in zip(state.layers, again.layers):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_full_size_manifest_keys_and_shapes(lina_dir):
    manifest = json.loads((lina_dir / "full-size-keys.json").read_text())
    keys = manifest["state_dict"]
    assert len(keys) == manifest["num_tensors"] == 344
    shapes = {k.removeprefix("model."): torch.Size(v) for k, v in keys.items()}
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    cfg = config_from_state_dict(sd)
    assert (cfg.d_model, cfg.n_layer, cfg.gla.heads, cfg.gla.head_k, cfg.gla.head_v) == (1024, 6, 8, 64, 128)
    assert (cfg.text_layers, cfg.text_heads, cfg.d_blind, cfg.out_vocab) == (6, 4, 1024, 4099)
    with torch.device("meta"):
        model = LinaModel(cfg)
    built = {k: v.shape for k, v in model.state_dict().items()}
    assert built == shapes
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]


def random_checkpoint(tmp_path, **changes):
    """A freshly initialised model of another size, saved as a plain state dict."""
    base = load_lina_config_tiny()
    cfg = replace(base, **changes)
    torch.manual_seed(0)
    model = LinaModel(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    path = tmp_path / "other.pt"
    torch.save({f"model.{k}": v for k, v in model.state_dict().items()}, path)
    return path, cfg


def load_lina_config_tiny():
    from wyoming_lina.model import GLAConfig, LinaConfig

    gla = GLAConfig(d_model=64, key_dim=64, value_dim=128, heads=4, hidden=85, gate_rank=16, short_conv=False)
    return LinaConfig(
        d_model=64, n_layer=1, gla=gla, pos_net=gla, text_vocab=256, text_layers=1, text_heads=4, text_hidden=85,
        att_dim=64, d_blind=64, max_text_len=2000, pos_kernel=31, audio_vocab=67, out_vocab=67,
    )  # fmt: skip


def test_other_sizes_derive_their_config_and_stay_causal(tmp_path, vec):
    path, cfg = random_checkpoint(tmp_path)
    model = load_lina(path)
    assert model.config == cfg  # heads 4, expand_k 1.0, expand_v 2.0, no short conv
    ctx = model.encode_text(vec["text_ids"])
    par, par_state = model.forward_audio(ctx, vec["audio_in"][:, :9], model.init_state(1))
    steps, step_state = step_through(model, ctx, vec["audio_in"][:, :9], model.init_state(1))
    torch.testing.assert_close(par, steps, atol=1e-4, rtol=0)
    assert step_state.layers[0].conv_q is None


def test_safetensors_and_plain_state_dict_load_identically(model, tmp_path, vec):
    path = tmp_path / "lina.safetensors"
    save_safetensors(model, path)
    again = load_lina(path)
    assert torch.equal(
        again.teacher_forced_logits(vec["text_ids"], vec["audio_in"]),
        model.teacher_forced_logits(vec["text_ids"], vec["audio_in"]),
    )


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("attentive_rnn.decoder.1.tmix.o_proj.weight"), "missing (1): attentive_rnn.decoder.1"),
        (
            lambda sd: sd.__setitem__("attentive_rnn.extra.weight", torch.zeros(1)),
            "unexpected (1): attentive_rnn.extra",
        ),
        (
            lambda sd: sd.__setitem__("attentive_rnn.decoder.0.cmix.p_in.bias", torch.zeros(3)),
            "wrong shape (1): attentive_rnn.decoder.0.cmix.p_in.bias",
        ),
        (lambda sd: sd.pop("txt_embed.weight"), "txt_embed.weight"),
    ],
)
def test_mismatched_checkpoint_names_the_keys(model, tmp_path, edit, message):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    edit(sd)
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_lina(path)


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint", b"\x00" * 100])
def test_non_checkpoint_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_lina(path)


def test_checkpoint_without_tensors_and_missing_file(tmp_path):
    path = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {}, "epoch": 0}, path)
    with pytest.raises(CheckpointError, match="no tensors"):
        load_lina(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_lina(tmp_path / "nope.ckpt")


def test_untrusted_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "obj": CheckpointError("an arbitrary class")}, path)
    with pytest.raises(CheckpointError, match="not trusted"):
        load_lina(path)


def test_speaker_state_for_another_model_is_refused(model, tmp_path):
    save_file({"layer0_k": torch.zeros(1, 1, 2, 16, 1)}, str(tmp_path / "s.safetensors"))
    with pytest.raises(VoiceError, match="missing"):
        load_speaker_state(tmp_path / "s.safetensors", model)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(VoiceError, match="cannot read"):
        load_speaker_state(tmp_path / "junk.safetensors", model)


def test_kernel_choice():
    assert choose_gla_kernel("cpu", 1, fla_available=True) == "naive"
    assert choose_gla_kernel("cuda", 1, fla_available=False) == "naive"
    assert choose_gla_kernel("cuda", 1, fla_available=True) == "fused_recurrent"
    assert choose_gla_kernel("cuda", 300, fla_available=True) == "chunk"
    # sequences without fla's kernels (a CPU; CUDA without Triton or while its kernels are deferred)
    assert choose_gla_kernel("cpu", CHUNKED_MIN_FRAMES - 1, fla_available=False) == "naive"
    assert choose_gla_kernel("cpu", CHUNKED_MIN_FRAMES, fla_available=False) == "chunked"
    assert choose_gla_kernel("cpu", 41, fla_available=True) == "chunked"  # the fixtures' parallel pass
    assert choose_gla_kernel("cuda", 375, fla_available=False) == "chunked"


@pytest.mark.parametrize(
    "recurrence",
    [naive_gla, chunked_gla, lambda *a, scale: chunked_gla(*a, scale, chunk=2)],
    ids=["naive", "chunked", "chunks-of-2"],
)
def test_recurrence_matches_a_float64_closed_form(recurrence):
    gen = torch.Generator().manual_seed(1)
    B, T, H, dk, dv = 2, 7, 2, 4, 3
    q, k, g = (torch.randn(B, T, H, dk, generator=gen, dtype=torch.float64) for _ in range(3))
    v = torch.randn(B, T, H, dv, generator=gen, dtype=torch.float64)
    g = F.logsigmoid(g)
    s0 = torch.randn(B, H, dk, dv, generator=gen, dtype=torch.float64)
    out, final = recurrence(q, k, v, g, s0, scale=0.5)
    # o_t = q_t * scale . (prod_{j<=t} decay_j * S0 + sum_{i<=t} prod_{i<j<=t} decay_j k_i^T v_i)
    cum = g.cumsum(1)
    for t in range(T):
        state = cum[:, t].exp()[..., None] * s0
        for i in range(t + 1):
            state = state + (cum[:, t] - cum[:, i]).exp()[..., None] * k[:, i, :, :, None] * v[:, i, :, None, :]
        torch.testing.assert_close(
            out[:, t].double(), torch.einsum("bhk,bhkv->bhv", q[:, t] * 0.5, state), atol=1e-5, rtol=1e-5
        )
    torch.testing.assert_close(final.double(), state, atol=1e-5, rtol=1e-5)


def test_cpu_path_never_imports_triton_or_fla(lina_dir, codec_dir):
    code = (
        "import sys, torch\n"
        "from wyoming_lina.codec import load_codec\n"
        f"c = load_codec({str(codec_dir / 'config.yaml')!r}, {str(codec_dir / 'model.ckpt')!r})\n"
        "c.decode(torch.zeros(1, 20, dtype=torch.long))\n"  # the codec's CUDA path has Triton convs
        "from wyoming_lina.model import load_lina\n"
        f"m = load_lina({str(lina_dir / 'model.ckpt')!r})\n"
        "m.teacher_forced_logits(torch.tensor([[1, 40, 2]]), torch.tensor([[1, 5, 6]]))\n"
        # fused for inference, three rows without autograd: the GEMV kernel's case, CUDA only
        "m.fuse_projections()\n"
        "assert not any(getattr(x, 'small_batch_gemv', False) for x in m.modules())\n"
        "with torch.inference_mode():\n"
        "    m.teacher_forced_logits(torch.tensor([[1, 40, 2]]), torch.tensor([[1, 5, 6]]))\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('triton', 'fla')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_fused_projections_compute_the_same_and_keep_the_state_dict(lina_dir, vec):
    model = load_lina(lina_dir / "model.ckpt")
    before = model.teacher_forced_logits(vec["text_ids"], vec["audio_in"])
    keys = set(model.state_dict())
    model.fuse_projections()
    assert set(model.state_dict()) == keys  # the fused copy is not a checkpoint tensor
    from wyoming_lina.model.layers import SwiGLU

    mlps = [m for m in model.modules() if isinstance(m, SwiGLU)]
    hidden = {m.p_out.weight.shape[1] for m in mlps}
    assert mlps and all(m.padded_out.shape[1] % 64 == 0 for m in mlps)  # aligned GEMMs on the GPU
    assert any(m.padded_out.shape[1] > m.p_out.weight.shape[1] for m in mlps), hidden  # padding exercised
    after = model.teacher_forced_logits(vec["text_ids"], vec["audio_in"])
    torch.testing.assert_close(after, before, atol=2e-5, rtol=0)
    vocab = model.logits_head.weight.shape[1]
    assert model.padded_head.shape[0] % 64 == 0 and model.padded_head.shape[0] > vocab  # padding exercised
    assert vec["audio_in"].shape[1] > 8  # more rows than the GEMV takes: the padded head's case
    with torch.inference_mode():  # inference only: the padded copy would not pass gradients to the head
        padded = model.teacher_forced_logits(vec["text_ids"], vec["audio_in"])
    assert padded.shape == before.shape
    torch.testing.assert_close(padded, before, atol=2e-5, rtol=0)
    ctx = model.encode_text(vec["text_ids"])
    steps, _ = step_through(model, ctx, vec["audio_in"], model.init_state(1))
    torch.testing.assert_close(steps, vec["logits_steps"], atol=LOGIT_ATOL, rtol=0)


def test_bf16_weights_keep_a_bf16_text_context_that_tracks_float32(lina_dir, vec):
    """With bf16 matrices (as on a GPU) the per-request keys/values/positions are stored in bf16
    (half the bytes every step reads) while the scores and softmaxes stay float32: the step
    logits stay close to the float32 model's."""
    ref = load_lina(lina_dir / "model.ckpt")
    half = cast_weights(load_lina(lina_dir / "model.ckpt"), torch.bfloat16)
    ctx_ref, ctx = ref.encode_text(vec["text_ids"]), half.encode_text(vec["text_ids"])
    assert ctx_ref.keys.dtype == torch.float32
    assert {ctx.keys.dtype, ctx.values.dtype, ctx.positions.dtype} == {torch.bfloat16}
    want, _ = step_through(ref, ctx_ref, vec["audio_in"], ref.init_state(1))
    got, _ = step_through(half, ctx, vec["audio_in"], half.init_state(1))
    assert got.dtype == torch.float32
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.9
