"""The CPU's decode step: the whole step as one ONNX Runtime graph with 8-bit weights.

A step for one row reads every matrix of the model once (~123M weights) and does little
arithmetic with each: on a CPU it is bound by moving weights and by the cost of each op
(``LinaModel.step`` runs ~1,000 small PyTorch ops). ``OnnxStep`` therefore

- writes the step for one frame as one graph (``FrameStep``: q/k/v/output gate and the folded
  low-rank decay gate stacked into one product per GLA layer, one conv window for q, k and v,
  the recurrence as a multiply and a matmul), exported once at start-up from the float32 model
  and never shipped;
- has ONNX Runtime's quantizer turn every product into ``MatMulNBits`` (8-bit weights, a scale
  and zero point per 128 weights along K, ``accuracy_level`` 4: int8 activations, the only fast
  8-bit kernel on this CPU class: float activations measured ~10x slower);
- rotates each product's input by a block-diagonal Hadamard matrix H (blocks of 128) and folds H
  into the weights (x W == (x H)(H W), H symmetric and orthogonal): the rotation spreads an
  activation's outliers over its block, so the per-block int8 rounding of the activations loses
  far less (top-1 agreement on the full-size random model: 78% without it, 84-87% with it).

Norms, convolutions, gates, the recurrence, the cross-attention and the state stay float32, and
the state keeps ``LinaState``'s layout, so the step can follow a float32 prefill, and
``LinaState.select``/``cat`` work on what it returns. ``docs/cpu.md`` has the measured speed, the
candidates that lost, and how far the logits are from the float32 model.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write_bytes
from .config import GATE_LOGIT_NORMALIZER, GLAConfig
from .cross_attention import TextContext
from .gla import GLABlock, GLAState
from .lina import LinaModel
from .state import LinaState

BITS = 8
BLOCK = 128  # weights per scale along K, and the Hadamard block (one rotation per quantization block)
ACCURACY_LEVEL = 4  # MatMulNBits: int8 activations (one scale per block), integer dot products per block
OPSET = 20


def hadamard(n: int) -> torch.Tensor:
    """The n x n Sylvester Hadamard matrix scaled to be orthogonal (n a power of two); symmetric."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n**0.5


def _padded(k: int) -> int:
    return k + (-k % BLOCK)


def _frozen(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().float().contiguous(), requires_grad=False)


def _rotated_weight(w: torch.Tensor) -> nn.Parameter:
    """W [K, N] -> blockdiag(H) @ W, K padded with zero rows to a multiple of BLOCK."""
    k, n = w.shape
    w = F.pad(w.float(), (0, 0, 0, _padded(k) - k))
    return _frozen((hadamard(BLOCK) @ w.reshape(-1, BLOCK, n)).reshape(-1, n))


class _Rotation(nn.Module):
    """x [B, K] -> x blockdiag(H) [B, K padded]. K a multiple of BLOCK (every width of the
    full-size model): one MatMul by H between two constant-shape Reshapes (the batch as -1, so
    the graph computes no shapes at run time). Any other K (the test models): one MatMul by the
    first K rows of blockdiag(H), the same as padding x with zeros first, without a Pad."""

    def __init__(self, widths):
        super().__init__()
        h = hadamard(BLOCK)
        self.hadamard = nn.Parameter(h, requires_grad=False)
        for k in sorted({k for k in widths if k % BLOCK}):
            full = torch.block_diag(*[h] * (_padded(k) // BLOCK))
            self.register_parameter(f"first_rows_{k}", nn.Parameter(full[:k].contiguous(), requires_grad=False))

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if k % BLOCK:
            return x @ getattr(self, f"first_rows_{k}")
        return (x.reshape(-1, BLOCK) @ self.hadamard).reshape(-1, k)


class _FrameBlock(nn.Module):
    """One GLA block (time-mix + SwiGLU) for one frame; products as (x H) @ (H W), W [K, N]."""

    def __init__(self, block: GLABlock, rotation: _Rotation):
        super().__init__()
        tmix, cmix = block.tmix, block.cmix
        c: GLAConfig = tmix.cfg
        if not c.short_conv:
            raise ValueError("the CPU step needs the short convolutions (all Lina checkpoints have them)")
        self.c, self.rotation = c, rotation
        self.norm1_w, self.norm1_b = _frozen(block.norm1.weight), _frozen(block.norm1.bias)
        self.norm2_w, self.norm2_b = _frozen(block.norm2.weight), _frozen(block.norm2.bias)
        gate = tmix.gk_proj[1].weight.float() @ tmix.gk_proj[0].weight.float()
        stacked = torch.cat([tmix.q_proj.weight, tmix.k_proj.weight, tmix.v_proj.weight, tmix.g_proj.weight, gate])
        self.w_in = _rotated_weight(stacked.float().T)
        self.gate_bias = _frozen(tmix.gk_proj[1].bias)
        self.conv_w = _frozen(torch.cat([tmix.q_conv1d.weight, tmix.k_conv1d.weight, tmix.v_conv1d.weight])[:, 0])
        self.norm_w = _frozen(tmix.g_norm_swish_gate.weight)
        self.w_out = _rotated_weight(tmix.o_proj.weight.float().T)
        # SwiGLU: both halves padded with zero columns to a multiple of BLOCK (silu(0) * 0 = 0), so
        # the hidden vector comes out of the first product already as wide as the second needs
        hidden = cmix.p_out.weight.shape[1]
        self.hidden = _padded(hidden)
        w, b = cmix.p_in.weight.float().T, cmix.p_in.bias.float()
        pad = (0, self.hidden - hidden)
        self.mlp_in_w = _rotated_weight(torch.cat([F.pad(w[:, :hidden], pad), F.pad(w[:, hidden:], pad)], 1))
        self.mlp_in_b = _frozen(torch.cat([F.pad(b[:hidden], pad), F.pad(b[hidden:], pad)]))
        self.mlp_out_w = _rotated_weight(cmix.p_out.weight.float().T)
        self.mlp_out_b = _frozen(cmix.p_out.bias)

    def forward(self, x: torch.Tensor, window: torch.Tensor, S: torch.Tensor):
        c, rot = self.c, self.rotation
        H, dk, dv, kd, qkv = c.heads, c.head_k, c.head_v, c.key_dim, 2 * c.key_dim + c.value_dim
        proj = rot(F.layer_norm(x, (c.d_model,), self.norm1_w, self.norm1_b, 1e-5), c.d_model) @ self.w_in
        window = torch.cat([window[:, :, 1:], proj[:, :qkv, None]], dim=2)
        y = F.silu((window * self.conv_w).sum(-1))
        q = y[:, :kd].reshape(-1, H, 1, dk)
        k = y[:, kd : 2 * kd].reshape(-1, H, dk, 1)
        v = y[:, 2 * kd : qkv].reshape(-1, H, 1, dv)
        decay = torch.exp(F.logsigmoid(proj[:, qkv + c.value_dim :] + self.gate_bias) / GATE_LOGIT_NORMALIZER)
        S = S * decay.reshape(-1, H, dk, 1) + k * v
        o = torch.matmul(q, S)  # without the scale dk^-0.5: RMSNorm(scale o, eps) == RMSNorm(o, eps dk)
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5 * dk) * self.norm_w
        o = o.reshape(-1, c.value_dim) * F.silu(proj[:, qkv : qkv + c.value_dim])
        x = x + rot(o, c.value_dim) @ self.w_out
        u = (
            rot(F.layer_norm(x, (c.d_model,), self.norm2_w, self.norm2_b, 1e-5), c.d_model) @ self.mlp_in_w
            + self.mlp_in_b
        )
        x = x + rot(F.silu(u[:, : self.hidden]) * u[:, self.hidden :], self.hidden) @ self.mlp_out_w + self.mlp_out_b
        return x, window, S


class FrameStep(nn.Module):
    """``LinaModel.step`` written for export: (tokens [B], keys, values, positions [B, N, .],
    mask [B, N], then per GLA layer in ``LinaState`` order its conv window [B, 2 key + value,
    conv_size] and S [B, H, dk, dv]) -> (logits [B, V], the new windows and S in the same order)."""

    def __init__(self, model: LinaModel):
        super().__init__()
        rnn, cfg = model.attentive_rnn, model.config
        widths = [g.d_model for g in layer_configs(model)] + [g.value_dim for g in layer_configs(model)]
        self.rotation = _Rotation(widths)  # (the SwiGLU hidden is padded in the weights)
        self.encoder = nn.ModuleList(_FrameBlock(b, self.rotation) for b in rnn.encoder)
        self.decoder = nn.ModuleList(_FrameBlock(b, self.rotation) for b in rnn.decoder)
        cross = rnn.cross_att
        self.pos_net = _FrameBlock(cross.pos_net, self.rotation)
        self.q_w, self.q_b = _rotated_weight(cross.q.weight.float().T), _frozen(cross.q.bias)
        self.ln_q_w, self.ln_q_b = _frozen(cross.ln_q.weight), _frozen(cross.ln_q.bias)
        self.embed = _frozen(model.rvq_embed.weight[0])
        self.head = _rotated_weight(model.logits_head.weight[0].float().T)
        self.d_model, self.att_dim, self.d_blind = cfg.d_model, cfg.att_dim, cfg.d_blind

    def forward(self, tokens, keys, values, positions, mask, *states):
        n, d = len(self.encoder), self.d_model
        new = list(states)
        x = self.embed[tokens]
        for i, block in enumerate(self.encoder):
            x, new[2 * i], new[2 * i + 1] = block(x, states[2 * i], states[2 * i + 1])
        bias = torch.where(mask, 0.0, float("-inf"))[:, None, :]  # (B, 1, N): padding of shorter texts
        q = self.rotation(x, d) @ self.q_w + self.q_b
        q = F.layer_norm(q, (self.att_dim,), self.ln_q_w, self.ln_q_b, 1e-5)
        scores = torch.matmul(q[:, None], keys.transpose(1, 2)) * self.att_dim**-0.5 + bias
        content = torch.matmul(torch.softmax(scores, -1), positions)[:, 0]
        p = 4 * n  # pos_net: layer 2n
        z, new[p], new[p + 1] = self.pos_net(content, states[p], states[p + 1])
        scores = torch.matmul(z[:, None], positions.transpose(1, 2)) * self.d_blind**-0.5 + bias
        x = x + torch.matmul(torch.softmax(scores, -1), values)[:, 0]
        for i, block in enumerate(self.decoder):
            j = 2 * (n + i)
            x, new[j], new[j + 1] = block(x, states[j], states[j + 1])
        return (self.rotation(x, d) @ self.head, *new)


def layer_configs(model: LinaModel) -> list[GLAConfig]:
    """Every GLA layer's config in ``LinaState`` order (encoder, decoder, pos_net)."""
    return [model.config.gla] * (2 * model.config.n_layer) + [model.config.pos_net]


def export_step(model: LinaModel):
    """The float32 graph of ``FrameStep`` (an ``onnx.ModelProto``, ~500 MB for the full-size
    model), dynamic in the batch and the text length. Parsed straight from the exporter's buffer,
    after the module's float32 copies of the weights are gone: at most two copies at a time."""
    import onnx

    cfg = model.config
    names, outputs = ["tokens", "keys", "values", "positions", "mask"], ["logits"]
    states = []
    for i, g in enumerate(layer_configs(model)):
        states += [
            torch.zeros(1, 2 * g.key_dim + g.value_dim, g.conv_size),
            torch.zeros(1, g.heads, g.head_k, g.head_v),
        ]
        names += [f"window{i}", f"S{i}"]
        outputs += [f"new_window{i}", f"new_S{i}"]
    n = 8
    ctx = (torch.zeros(1, n, cfg.att_dim), torch.zeros(1, n, cfg.att_dim), torch.zeros(1, n, cfg.d_blind))
    dynamic = {name: {0: "batch"} for name in names + outputs} | {name: {0: "batch", 1: "text"} for name in names[1:5]}
    buffer, step = io.BytesIO(), FrameStep(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # PyTorch >= 2.9 says the TorchScript exporter is deprecated (twice: the notice, and its own
        # logging helper); it is the one that exports this graph in seconds without onnxscript.
        # Every other warning is let through.
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning, r"torch\.onnx\.")
        torch.onnx.export(
            step,
            (torch.ones(1, dtype=torch.long), *ctx, torch.ones(1, n, dtype=torch.bool), *states),
            buffer,
            dynamo=False,
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
        )
    del step
    graph = onnx.ModelProto()
    with buffer.getbuffer() as view:
        graph.ParseFromString(view)
    return graph


def quantize(graph) -> bytes:
    """Every MatMul by a constant weight -> MatMulNBits (BITS, BLOCK, ACCURACY_LEVEL), except the
    rotations (``_Rotation``'s: exact in float32, and tiny). ``graph`` (a ModelProto) is changed
    in place; returns the quantized graph's bytes (~140 MB for the full-size model)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # a line per node otherwise
    exclude = [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.input[1].startswith("rotation.")]
    quantizer = MatMulNBitsQuantizer(
        graph, bits=BITS, block_size=BLOCK, accuracy_level=ACCURACY_LEVEL, nodes_to_exclude=exclude
    )
    quantizer.process()
    return quantizer.model.model.SerializeToString()


_NUMPY = {torch.float32: np.float32, torch.int64: np.int64, torch.bool: np.bool_}
_LOGGER = logging.getLogger(__name__)


def fingerprint(model: LinaModel) -> str:
    """What the quantized graph is made of: the model's config, every tensor's name, shape and
    float64 sums (exact and position-weighted: another checkpoint differs), and the libraries and
    settings that shape the graph. Hashing the sums, not the bytes, reads each weight once."""
    import onnx
    import onnxruntime

    digest = hashlib.blake2b(digest_size=16)
    parts = (torch.__version__, onnx.__version__, onnxruntime.__version__, BITS, BLOCK, ACCURACY_LEVEL, OPSET)
    digest.update(repr((parts, model.config)).encode())
    for name, t in model.state_dict().items():
        flat = t.detach().reshape(-1)
        ramp = torch.linspace(1.0, 2.0, flat.numel(), dtype=flat.dtype) if flat.is_floating_point() else None
        sums = (
            flat.sum(dtype=torch.float64).item(),
            (flat * ramp).sum(dtype=torch.float64).item() if ramp is not None else 0,
        )
        digest.update(repr((name, tuple(t.shape), str(t.dtype), sums)).encode())
    return digest.hexdigest()


def _cached_graph(path: Path | None) -> bytes | None:
    try:
        return path.read_bytes() if path is not None and path.is_file() else None
    except OSError as err:
        _LOGGER.warning("could not read the cached CPU step %s (%s): building it again", path, err)
        return None


def _store_graph(path: Path, graph: bytes) -> None:
    """Write atomically (``atomic.atomic_write_bytes``) and drop the other models' graphs; a full
    or read-only disk costs the next start the build, nothing else."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, graph)
        for old in path.parent.glob("cpu-step-*.onnx"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as err:
        _LOGGER.warning("could not keep the CPU step in %s (%s): the next start builds it again", path.parent, err)


class OnnxStep:
    """``LinaModel.step`` through an ONNX Runtime session on 8-bit rotated weights, for the CPU.
    Built once from a float32 model (export + quantize + session: 6-12 s for the full-size model
    on 2 shared cores, ~2 GB of memory at its peak) and kept in ``cache_dir`` (a restart loads it:
    ~2 s, ~0.4 GB; bench/cpu_step_build.py); the model itself is not changed and keeps doing
    everything else (text encoding, prompt prefill).

    ``step(ctx, tokens, state) -> (logits [B, V] float32, new state)``: the same contract as
    ``LinaModel.step``. The state passed in is not modified: the session writes the new one into
    fresh tensors (its conv windows are views of one [B, 2 key + value, K] tensor per layer,
    which the next step reads without copying)."""

    def __init__(self, model: LinaModel, threads: int | None = None, cache_dir: str | Path | None = None):
        try:  # (onnx-ir: ONNX Runtime's quantizer imports it without declaring it; setup.cfg does)
            import onnx  # noqa: F401
            import onnx_ir  # noqa: F401
            import onnxruntime as ort
        except ImportError as err:
            raise RuntimeError(
                f"the quantized CPU step (--cpu-quant q8) needs onnxruntime, onnx and onnx-ir: {err}"
            ) from None
        if model.device.type != "cpu":
            raise ValueError(f"the quantized step runs on the CPU, the model is on {model.device}")
        self.layers = layer_configs(model)
        self.vocab = model.config.out_vocab
        # ``cache_dir`` (the data dir's): the quantized graph of this model is kept there, so a
        # restart skips the export and its memory peak (~2 GB for the full-size model)
        path = Path(cache_dir) / f"cpu-step-{fingerprint(model)}.onnx" if cache_dir is not None else None
        graph = _cached_graph(path)
        self.from_cache = graph is not None
        if graph is None:
            graph = quantize(export_step(model))  # the float32 graph lives only inside this line
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no spinning: idle threads would take the cores the codec and the event loop need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own errors: only a damaged cached file gets here
            if not self.from_cache:
                raise
            _LOGGER.warning("the cached CPU step %s is damaged (%s): building it again", path, err)
            self.from_cache, graph = False, quantize(export_step(model))
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        if path is not None and not self.from_cache:
            _store_graph(path, graph)
        self.graph_bytes = len(graph)  # the quantized graph: every weight a step reads, and the embeddings
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]

    @torch.inference_mode()
    def step(self, ctx: TextContext, tokens: torch.Tensor, state: LinaState) -> tuple[torch.Tensor, LinaState]:
        """One frame for every row: tokens [B] -> logits [B, V] (float32), new state."""
        B = tokens.shape[0]
        inputs = [tokens.long().contiguous()]
        inputs += [t.float().contiguous() for t in (ctx.keys, ctx.values, ctx.positions)]
        inputs.append(ctx.mask.bool().contiguous())
        outputs = [torch.empty(B, self.vocab)]
        for layer, g in zip(state.layers, self.layers):
            inputs += [_conv_window(layer).contiguous(), layer.S.float().contiguous()]
            outputs += [
                torch.empty(B, 2 * g.key_dim + g.value_dim, g.conv_size),
                torch.empty(B, g.heads, g.head_k, g.head_v),
            ]
        binding = self.session.io_binding()
        for name, t in zip(self._inputs, inputs):
            binding.bind_input(name, "cpu", 0, _NUMPY[t.dtype], list(t.shape), t.data_ptr())
        for name, t in zip(self._outputs, outputs):
            binding.bind_output(name, "cpu", 0, _NUMPY[t.dtype], list(t.shape), t.data_ptr())
        self.session.run_with_iobinding(binding)
        layers = []
        for i, g in enumerate(self.layers):
            w, S = outputs[1 + 2 * i], outputs[2 + 2 * i]
            layers.append(GLAState(w[:, : g.key_dim], w[:, g.key_dim : 2 * g.key_dim], w[:, 2 * g.key_dim :], S))
        return outputs[0], LinaState(layers)


def _conv_window(state: GLAState) -> torch.Tensor:
    """The q, k and v conv windows as one [B, 2 key + value, K] tensor. The step hands out its
    windows as views of one tensor, so a state it made costs nothing here; any other (a float32
    prefill, ``LinaState.select``) is stacked once."""
    q, k, v = state.conv_q, state.conv_k, state.conv_v
    # (checked by pointers and strides, not ``_base``: views made under inference_mode have none)
    B, width, K = q.shape[0], q.shape[1] + k.shape[1] + v.shape[1], q.shape[2]
    stride = (width * K, K, 1)
    if (
        all(
            t.dtype == torch.float32 and t.shape[0] == B and t.shape[2] == K and t.stride() == stride for t in (q, k, v)
        )
        and q.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
        and k.data_ptr() == q.data_ptr() + q.shape[1] * K * 4
        and v.data_ptr() == k.data_ptr() + k.shape[1] * K * 4
    ):
        return q.as_strided((B, width, K), stride)
    return torch.cat([q, k, v], dim=1).float()
