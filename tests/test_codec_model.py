"""WavTokenizer against the upstream-produced fixture: strict loading, encode, decode, key layout."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from wyoming_lina.codec import WavTokenizer, WavTokenizerConfig, load_codec, read_config, save_codec_safetensors
from wyoming_lina.codec.config import config_from_yaml_dict
from wyoming_lina.codec.istft_head import istft_same
from wyoming_lina.codec.loading import generator_state_dict
from wyoming_lina.codec.sconv import reflect_pad, same_padding, weight_norm
from wyoming_lina.errors import CheckpointError

ENCODER_ATOL = 5e-5
BACKBONE_ATOL = 2e-5
WAV_ATOL = 5e-6
CASES = ["", "_b2", "_short"]


@pytest.fixture(scope="module")
def vec(codec_dir):
    return load_file(str(codec_dir / "vectors.safetensors"))


@pytest.fixture(scope="module")
def raw_ckpt(codec_dir):
    return torch.load(codec_dir / "model.ckpt", map_location="cpu", weights_only=True)


# ---- loading ----------------------------------------------------------------------------------


def test_fixture_config_and_sizes(codec):
    cfg = codec.config
    assert (cfg.n_filters, cfg.dimension, cfg.codebook_size, cfg.dim, cfg.intermediate_dim, cfg.num_layers) == (
        4,
        32,
        64,
        64,
        128,
        2,
    )
    assert cfg.ratios == (8, 5, 4, 2)
    assert (codec.sample_rate, codec.hop_length, codec.codebook_size) == (24000, 320, 64)
    assert sum(t.numel() for t in codec.state_dict().values()) == 505_185  # README: generator incl. buffers
    assert not codec.training and not any(p.requires_grad for p in codec.parameters())


def test_junk_keys_are_dropped(raw_ckpt):
    sd = generator_state_dict(raw_ckpt["state_dict"])
    assert len(raw_ckpt["state_dict"]) == 213 and len(sd) == 199
    assert not any(k.startswith(("multiperioddisc", "multiresddisc", "dac", "melspec_loss")) for k in sd)


def _save_variant(tmp_path, raw_ckpt, edit, name="variant.ckpt"):
    ckpt = dict(raw_ckpt)
    ckpt["state_dict"] = dict(raw_ckpt["state_dict"])
    edit(ckpt["state_dict"])
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def test_missing_key_is_named(tmp_path, codec_dir, raw_ckpt):
    key = "backbone.convnext.1.pwconv2.bias"
    path = _save_variant(tmp_path, raw_ckpt, lambda sd: sd.pop(key))
    with pytest.raises(CheckpointError, match=r"missing \(1\): " + key.replace(".", r"\.")):
        load_codec(codec_dir / "config.yaml", path)


def test_wrong_shape_is_named(tmp_path, codec_dir, raw_ckpt):
    key = "feature_extractor.encodec.quantizer.vq.layers.0._codebook.embed"
    path = _save_variant(tmp_path, raw_ckpt, lambda sd: sd.__setitem__(key, torch.zeros(65, 32)))
    with pytest.raises(
        CheckpointError, match=r"wrong shape.*_codebook\.embed: checkpoint \[65, 32\] != model \[64, 32\]"
    ):
        load_codec(codec_dir / "config.yaml", path)


def test_unexpected_generator_key_is_named(tmp_path, codec_dir, raw_ckpt):
    path = _save_variant(tmp_path, raw_ckpt, lambda sd: sd.__setitem__("backbone.convnext.2.gamma", torch.ones(64)))
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): backbone\.convnext\.2\.gamma"):
        load_codec(codec_dir / "config.yaml", path)


def test_config_that_does_not_match_the_checkpoint(tmp_path, codec_dir):
    data = yaml.safe_load((codec_dir / "config.yaml").read_text())
    data["model"]["init_args"]["backbone"]["init_args"]["num_layers"] = 3
    path = tmp_path / "three_layers.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match=r"missing \(9\): backbone\.convnext\.2\."):
        load_codec(path, codec_dir / "model.ckpt")


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint\n" * 10, b"PK\x03\x04garbage"])
def test_non_checkpoint_file(tmp_path, codec_dir, content):
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a loadable PyTorch checkpoint"):
        load_codec(codec_dir / "config.yaml", path)


def test_checkpoint_without_generator_or_missing(tmp_path, codec_dir):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"model.layer.weight": torch.ones(2)}}, path)
    with pytest.raises(CheckpointError, match="no WavTokenizer generator tensors"):
        load_codec(codec_dir / "config.yaml", path)
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match="not a checkpoint dict"):
        load_codec(codec_dir / "config.yaml", path)
    with pytest.raises(CheckpointError, match="not found"):
        load_codec(codec_dir / "config.yaml", tmp_path / "nope.ckpt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_codec(codec_dir / "config.yaml", tmp_path / "bad.safetensors")


def test_uninitialised_codebook_is_refused(tmp_path, codec_dir, raw_ckpt):
    key = "feature_extractor.encodec.quantizer.vq.layers.0._codebook.inited"
    path = _save_variant(tmp_path, raw_ckpt, lambda sd: sd.__setitem__(key, torch.zeros(1)))
    with pytest.raises(CheckpointError, match="never initialised"):
        load_codec(codec_dir / "config.yaml", path)


def test_plain_state_dict_with_parametrization_names(tmp_path, codec, codec_dir, vec):
    sd = {}
    for key, value in codec.state_dict().items():  # the newer weight-norm API's names
        key = key.replace(".weight_g", ".parametrizations.weight.original0")
        sd[key.replace(".weight_v", ".parametrizations.weight.original1")] = value
    assert any("original0" in k for k in sd)
    torch.save(sd, tmp_path / "plain.pt")
    again = load_codec(codec_dir / "config.yaml", tmp_path / "plain.pt")
    assert torch.equal(again.encode(vec["wav_in"]), codec.encode(vec["wav_in"]))


def test_safetensors_round_trip(tmp_path, codec, vec):
    path = tmp_path / "codec.safetensors"
    save_codec_safetensors(codec, path)
    again = load_codec(None, path)  # config comes from the file's metadata
    assert again.config == codec.config
    assert torch.equal(again.encoder_out(vec["wav_in"]), codec.encoder_out(vec["wav_in"]))
    codes = codec.encode(vec["wav_in"])
    assert torch.equal(again.decode(codes), codec.decode(codes))
    assert torch.equal(again.decode(codes, bandwidth_id=2), codec.decode(codes, bandwidth_id=2))


def test_safetensors_without_config_metadata_uses_full_size_defaults(tmp_path, codec):
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_codec(None, path)


def test_full_size_key_manifest(codec_dir):
    manifest = json.loads((codec_dir / "full-size-keys.json").read_text())
    with torch.device("meta"):
        model = WavTokenizer(WavTokenizerConfig())
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(got) == list(manifest["keys"])  # names and upstream order
    assert got == manifest["keys"]
    assert len(got) == manifest["total"] == 289
    assert sum(p.numel() for p in model.parameters()) == manifest["n_parameters_elements"]
    buffers = {name for name, _ in model.named_buffers()}
    assert buffers == set(manifest["buffers"])


# ---- config -----------------------------------------------------------------------------------


def _yaml(codec_dir):
    return yaml.safe_load((codec_dir / "config.yaml").read_text())


def test_yaml_without_extra_keys_is_the_full_model(codec_dir):
    data = _yaml(codec_dir)
    args = data["model"]["init_args"]
    del args["feature_extractor"]["init_args"]["n_filters"], args["feature_extractor"]["init_args"]["dimension"]
    args["feature_extractor"]["init_args"]["vq_bins"] = 4096
    args["backbone"]["init_args"].update(input_channels=512, dim=768, intermediate_dim=2304, num_layers=12)
    args["head"]["init_args"]["dim"] = 768
    assert config_from_yaml_dict(data) == WavTokenizerConfig()


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("backbone", "input_channels", 48, "input_channels 48 != feature_extractor dimension 32"),
        ("backbone", "dim", 48, "head.dim 64 != backbone.dim 48"),
        ("feature_extractor", "dowmsamples", [8, 5, 4, 4], "!= hop_length 320"),
        ("feature_extractor", "num_quantizers", 2, "num_quantizers must be 1"),
        ("head", "padding", "center", "only 'same'"),
        ("backbone", "unknown_knob", 1, "unknown backbone.init_args keys"),
    ],
)
def test_bad_yaml_values_are_explained(tmp_path, codec_dir, section, key, value, message):
    data = _yaml(codec_dir)
    data["model"]["init_args"][section]["init_args"][key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match=message):
        read_config(path)


def test_dim_must_divide_into_groupnorm_groups():
    with pytest.raises(CheckpointError, match="divisible by 32"):
        WavTokenizerConfig(dim=48)


def test_non_yaml_and_wrong_class(tmp_path, codec_dir):
    path = tmp_path / "x.yaml"
    path.write_text("just: [a, list")
    with pytest.raises(CheckpointError, match="cannot read WavTokenizer config"):
        read_config(path)
    path.write_text("model: {init_args: {}}")
    with pytest.raises(CheckpointError, match="not a WavTokenizer yaml"):
        read_config(path)
    data = _yaml(codec_dir)
    data["model"]["init_args"]["head"]["class_path"] = "decoder.heads.IMDCTCosHead"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match="only ISTFTHead"):
        read_config(path)


# ---- against upstream numbers ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_encoder_and_codes(codec, vec, case):
    wav = vec[f"wav_in{case}"]
    torch.testing.assert_close(codec.encoder_out(wav), vec[f"encoder_out{case}"], atol=ENCODER_ATOL, rtol=0)
    codes = codec.encode(wav)
    assert codes.dtype == torch.int64 and codes.shape == (wav.shape[0], math.ceil(wav.shape[1] / 320))
    assert torch.equal(codes, vec[f"codes{case}"][0])
    assert torch.equal(codec.codes_to_features(codes), vec[f"features{case}"])


@pytest.mark.parametrize("case", CASES)
def test_backbone_and_decode(codec, vec, case):
    codes = vec[f"codes{case}"][0]
    with torch.inference_mode():
        backbone_out = codec.backbone(vec[f"features{case}"], 0)
    torch.testing.assert_close(backbone_out, vec[f"backbone_out{case}"], atol=BACKBONE_ATOL, rtol=0)
    wav = codec.decode(codes)
    assert wav.dtype == torch.float32 and wav.shape == (codes.shape[0], 320 * codes.shape[1])
    torch.testing.assert_close(wav, vec[f"wav_out{case}"], atol=WAV_ATOL, rtol=0)


def test_inference_copies_decode_the_same_and_keep_the_state_dict(codec_dir, vec):
    """The engine folds each ConvNeXt block's gamma into its second pointwise layer (one
    elementwise pass less per block; in place: gamma becomes ones) and stores the embedding
    conv's weight channels-last (the pos-net's too behind CUDA's GroupNorm kernel): the decode
    must still reproduce upstream's audio, and folding again must change nothing."""
    codec = load_codec(codec_dir / "config.yaml", codec_dir / "model.ckpt")
    keys = set(codec.state_dict())
    gamma = codec.backbone.convnext[0].gamma.clone()
    w2 = codec.backbone.convnext[0].pwconv2.weight.clone()
    codec.backbone.fold_layer_scales()
    codec.backbone.cache_conv_weights()
    assert set(codec.state_dict()) == keys
    block = codec.backbone.convnext[0]
    assert all(b.layer_scale_folded for b in codec.backbone.convnext) and bool((block.gamma == 1).all())
    assert torch.equal(block.pwconv2.weight, w2 * gamma[:, None])
    folded = {k: v.clone() for k, v in codec.state_dict().items()}
    codec.backbone.fold_layer_scales()
    assert all(torch.equal(folded[k], v) for k, v in codec.state_dict().items())
    embed = codec.backbone.embed.weight
    assert embed.unsqueeze(2).is_contiguous(memory_format=torch.channels_last) and not embed.is_contiguous()
    assert codec.backbone.pos_net[0].conv1.weight.is_contiguous()  # (CPU: its input comes NCHW)
    for case in CASES:
        with torch.inference_mode():
            backbone_out = codec.backbone(vec[f"features{case}"], 0)
        torch.testing.assert_close(backbone_out, vec[f"backbone_out{case}"], atol=BACKBONE_ATOL, rtol=0)
        torch.testing.assert_close(codec.decode(vec[f"codes{case}"][0]), vec[f"wav_out{case}"], atol=WAV_ATOL, rtol=0)


def test_bandwidth_id_picks_adaln_rows(codec, vec):
    wav = codec.decode(vec["codes"][0], bandwidth_id=3)
    torch.testing.assert_close(wav, vec["wav_out_bw3"], atol=WAV_ATOL, rtol=0)
    assert (wav - vec["wav_out"]).abs().max() > 0.05


def test_batch_equals_alone(codec, vec):
    wav = vec["wav_in_b2"]
    codes = codec.encode(wav)
    assert torch.equal(codec.encode(wav[1:]), codes[1:])
    batch = codec.decode(codes)
    for i in range(2):
        torch.testing.assert_close(codec.decode(codes[i : i + 1])[0], batch[i], atol=1e-6, rtol=0)


def test_decode_input_is_checked(codec):
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        codec.decode(torch.tensor([[0, 64]]))
    with pytest.raises(ValueError, match="bandwidth_id"):
        codec.decode(torch.tensor([[0, 1]]), bandwidth_id=4)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        codec.decode(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        codec.encode(torch.zeros(100))


def test_bf16_backbone_keeps_head_and_encoder_fp32(codec_dir, codec, vec):
    half = load_codec(codec_dir / "config.yaml", codec_dir / "model.ckpt", dtype=torch.bfloat16)
    assert half.backbone_dtype == torch.bfloat16
    assert half.head.out.weight.dtype == torch.float32 and half.head.istft.window.dtype == torch.float32
    assert half.feature_extractor.encodec.encoder.model[0].conv.conv.weight_v.dtype == torch.float32
    assert torch.equal(half.encode(vec["wav_in"]), vec["codes"][0])
    wav = half.decode(vec["codes"][0])
    assert wav.dtype == torch.float32
    ref = vec["wav_out"]
    snr = 10 * torch.log10(ref.square().sum() / (wav - ref).square().sum())
    assert snr > 20, snr


def test_head_projects_a_half_backbone_with_its_weight_in_that_dtype(codec_dir, codec, vec):
    """Behind a bf16 backbone the head's projection uses a bf16 copy of its weight (tensor cores
    on CUDA, float32 products and output; the CPU runs the same products): the state_dict is
    untouched, the float32 weight is still what the checkpoint holds, and the audio stays as
    close to the float32 decode as the bf16 backbone alone allows."""
    half = load_codec(codec_dir / "config.yaml", codec_dir / "model.ckpt", dtype=torch.bfloat16)
    weight = half.head.input_dtype_weight
    assert weight is not None and weight.dtype == torch.bfloat16
    assert torch.equal(weight, half.head.out.weight.to(torch.bfloat16))
    assert set(half.state_dict()) == set(codec.state_dict())
    assert torch.equal(half.head.out.weight, codec.head.out.weight)
    x = torch.randn(2, 5, half.head.out.in_features).to(torch.bfloat16)
    want = x.double() @ weight.double().T + half.head.out.bias.double()
    torch.testing.assert_close(half.head.project(x).double(), want, atol=1e-5, rtol=1e-5)
    full = codec.decode(vec["codes"][0])

    def snr(wav):
        return 10 * torch.log10(full.square().sum() / (wav - full).square().sum())

    with_copy = half.decode(vec["codes"][0])
    half.head.use_input_dtype(None)  # float32 projection of the same bf16 backbone output
    assert half.head.input_dtype_weight is None
    without = half.decode(vec["codes"][0])
    assert abs(snr(with_copy) - snr(without)) < 1.0, (snr(with_copy), snr(without))
    assert not torch.equal(with_copy, without)  # the copy really was used


# ---- naive twins of the pieces ------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 8])
def test_conv_over_time_is_conv1d_in_time_major_layout(groups):
    """The backbone's convs take (B, T, C) (contiguous, or the transposed view a CPU GroupNorm
    returns) and must equal nn.Conv1d on (B, C, T), with the weight plain or channels-last."""
    from wyoming_lina.codec.backbone import conv_over_time

    torch.manual_seed(groups)
    for k in (1, 3, 7):
        conv = torch.nn.Conv1d(16, 24, k, padding=k // 2, groups=groups)
        x = torch.randn(3, 11, 16)
        want = conv(x.transpose(1, 2)).transpose(1, 2)
        for inp in (x, x.transpose(1, 2).contiguous().transpose(1, 2)):
            torch.testing.assert_close(conv_over_time(inp, conv), want, atol=1e-5, rtol=1e-5)
        with torch.no_grad():  # as cache_conv_weights stores it
            conv.weight.data = conv.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last).squeeze(2)
        for inp in (x, x.transpose(1, 2).contiguous().transpose(1, 2)):
            out = conv_over_time(inp, conv)
            assert out.shape == (3, 11, 24) and out.is_contiguous()
            torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_group_norm_over_time_is_group_norm_in_time_major_layout():
    from wyoming_lina.codec.backbone import group_norm_over_time

    norm = torch.nn.GroupNorm(4, 16, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = 3 + 2 * torch.randn(2, 9, 16)
    want = norm(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(group_norm_over_time(x, norm), want)
    torch.testing.assert_close(group_norm_over_time(x, norm, silu=True), F.silu(want))


@pytest.mark.parametrize(
    "kernel, stride, dilation", [(7, 1, 1), (3, 1, 1), (1, 1, 1), (4, 2, 1), (16, 8, 1), (10, 5, 1), (3, 1, 3)]
)
def test_padding_gives_ceil_length(kernel, stride, dilation):
    for length in range(1, 60):
        left, right = same_padding(length, kernel, stride, dilation)
        x = torch.randn(1, 1, length)
        y = F.conv1d(reflect_pad(x, left, right), torch.ones(1, 1, kernel), stride=stride, dilation=dilation)
        assert y.shape[-1] == math.ceil(length / stride), (length, left, right)
        total = (kernel - 1) * dilation + 1 - stride
        assert (left, right) == (total - total // 2, total // 2 + (y.shape[-1] * stride - length))


def test_reflect_pad_short_input_matches_numpy_twin():
    for length in range(1, 9):
        for left, right in [(3, 3), (4, 7), (1, 0), (0, 5)]:
            x = np.arange(1, length + 1, dtype=np.float32)
            zeros = max(0, max(left, right) - length + 1)
            twin = np.pad(np.pad(x, (0, zeros)), (left, right), mode="reflect")[: length + left + right]
            got = reflect_pad(torch.from_numpy(x)[None, None], left, right)[0, 0].numpy()
            np.testing.assert_array_equal(got, twin)


def test_weight_norm_matches_torch():
    v, g = torch.randn(6, 4, 5), torch.rand(6, 1, 1) + 0.5
    torch.testing.assert_close(weight_norm(g, v), torch._weight_norm(v, g, 0))
    vt, gt = torch.randn(4, 6, 8), torch.rand(4, 1, 1) + 0.5  # ConvTranspose: dim 0 = input channels
    torch.testing.assert_close(weight_norm(gt, vt), torch._weight_norm(vt, gt, 0))


def test_nearest_code_matches_cdist(codec):
    x = torch.randn(3, 32, 50) * 5
    expect = torch.cdist(x.transpose(1, 2), codec.quantizer.embed[None].expand(3, -1, -1)).argmin(-1)
    assert torch.equal(codec.quantizer.encode(x), expect)


def test_istft_matches_frame_by_frame_twin():
    torch.manual_seed(0)
    n_fft, hop, frames = 1280, 320, 9
    spec = torch.polar(
        torch.rand(2, n_fft // 2 + 1, frames, dtype=torch.float64),
        torch.randn(2, n_fft // 2 + 1, frames, dtype=torch.float64),
    )
    window = torch.hann_window(n_fft, dtype=torch.float64)
    total = (frames - 1) * hop + n_fft
    y, env = torch.zeros(2, total, dtype=torch.float64), torch.zeros(total, dtype=torch.float64)
    for t in range(frames):
        y[:, t * hop : t * hop + n_fft] += torch.fft.irfft(spec[:, :, t], n=n_fft) * window
        env[t * hop : t * hop + n_fft] += window**2
    pad = (n_fft - hop) // 2
    twin = (y / env)[:, pad:-pad]
    got = istft_same(spec, window, hop)
    assert got.shape == (2, hop * frames)
    torch.testing.assert_close(got, twin, atol=1e-12, rtol=0)
