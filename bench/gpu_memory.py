"""Where the GPU memory of a server goes: the engine built as ``serve`` builds it, stage by stage.

    python bench/gpu_memory.py --fixtures ../shared/fixtures --max-batch 16 [--work-dir /tmp/bs]

Full-size random weights (bench_server.py's ``prepare``), ``load_runtime`` with ``--max-batch``,
the warm-up on its thread as ``serve`` runs it, then a load of ``--clients`` concurrent prompt-voice
requests. At every stage: the device's used memory (``mem_get_info``: what nvidia-smi shows, the
CUDA context and driver-side module memory included), the caching allocator's reserved and
allocated bytes, and the allocated peak since the previous stage. At the end the live allocations
grouped by where they were made (the innermost frame of this project, else the innermost frame;
``torch.cuda.memory._record_memory_history``), largest first, so a change can aim at the big ones.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_server import PROMPT_VOICE, SEED, prepare  # noqa: E402
from load_clients import TEXTS  # noqa: E402

GIB = 2**30


class Stages:
    """Memory at each named moment (thread-safe: the warm-up thread reports its stages)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.rows: list[tuple[str, float, float, float, float, float]] = []
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def mark(self, what: str) -> None:
        free, total = torch.cuda.mem_get_info(self.device)
        with self.lock:
            self.rows.append(
                (
                    what,
                    time.monotonic() - self.started,
                    (total - free) / GIB,
                    torch.cuda.memory_reserved(self.device) / GIB,
                    torch.cuda.memory_allocated(self.device) / GIB,
                    torch.cuda.max_memory_allocated(self.device) / GIB,
                )
            )
            torch.cuda.reset_peak_memory_stats(self.device)
        print(f"{what}: used {self.rows[-1][2]:.2f} GiB, reserved {self.rows[-1][3]:.2f}", flush=True)

    def table(self, baseline: float) -> list[str]:
        out = [
            f"| stage | s | device used GiB (above the {baseline:.2f} before) | reserved | allocated | allocated peak since the last stage |",
            "|---|---|---|---|---|---|",
        ]
        for what, t, used, reserved, allocated, peak in self.rows:
            out.append(f"| {what} | {t:.1f} | {used - baseline:.2f} | {reserved:.2f} | {allocated:.2f} | {peak:.2f} |")
        return out


def where(frames: list[dict]) -> str:
    """The innermost frame of this project (else of anything) that made an allocation."""
    for frame in frames:
        name = frame.get("filename", "")
        if "wyoming_lina" in name or "/bench/" in name:
            return f"{name.split('wyoming_lina/')[-1]}:{frame.get('line')} {frame.get('name')}"
    for frame in frames:
        name = frame.get("filename", "")
        if name.endswith(".py") and "torch/cuda/memory.py" not in name:
            return f"{name.rsplit('/', 2)[-2:]}:{frame.get('line')} {frame.get('name')}"
    return "(no Python frame)"


def stack(frames: list[dict]) -> str:
    """The frames of this project, fla and triton, innermost first."""
    names = ("wyoming_lina", "/fla/", "triton", "bench", "torch/_inductor", "torch/cuda/graphs")
    keep = [f for f in frames if any(k in f.get("filename", "") for k in names)]
    return " < ".join(f"{f['filename'].rsplit('/', 1)[-1]}:{f.get('line')} {f.get('name')}" for f in keep[:14])


def describe_holder(obj, depth: int = 2) -> str:
    """What holds a tensor: the referrer's type, through dicts and containers to their owner."""
    import gc
    import types

    name = type(obj).__name__
    if depth == 0 or not isinstance(obj, (dict, list, tuple)):
        return name
    owners = [o for o in gc.get_referrers(obj) if not isinstance(o, types.FrameType)][:3]
    return f"{name}<-[{', '.join(describe_holder(o, depth - 1) for o in owners)}]"


def live_allocations(top: int) -> list[str]:
    """Live blocks by allocation site; for the 8 largest sites the stack of their largest block and
    which Python objects hold tensors in it."""
    import gc

    snapshot = torch.cuda.memory._snapshot()
    sizes: dict[str, int] = collections.Counter()
    counts: dict[str, int] = collections.Counter()
    pools: dict[str, int] = collections.Counter()
    largest: dict[str, dict] = {}
    in_graph_pool: dict[str, int] = collections.Counter()
    for segment in snapshot["segments"]:
        graph_pool = tuple(segment.get("segment_pool_id", (0, 0))) != (0, 0)
        pools["graph pools" if graph_pool else "default pool"] += segment["total_size"]
        for block in segment["blocks"]:
            if block["state"] != "active_allocated":
                continue
            site = where(block.get("frames", []))
            sizes[site] += block["size"]
            counts[site] += 1
            in_graph_pool[site] += block["size"] if graph_pool else 0
            if site not in largest or block["size"] > largest[site]["size"]:
                largest[site] = {**block, "address": block.get("address", segment["address"])}
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    out = [
        f"segments: {', '.join(f'{k} {v / GIB:.2f} GiB' for k, v in pools.items())}",
        "",
        "| live allocations made at | MiB | of it in graph pools | blocks |",
        "|---|---|---|---|",
    ]
    for site, size in ranked:
        out.append(f"| {site} | {size / 2**20:.1f} | {in_graph_pool[site] / 2**20:.1f} | {counts[site]} |")
    wanted = {largest[site]["address"]: site for site, _ in ranked[:8]}
    ends = {addr: addr + largest[site]["size"] for addr, site in wanted.items()}
    holders: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for obj in gc.get_objects():
        if not (isinstance(obj, torch.Tensor) and obj.is_cuda):
            continue
        ptr = obj.untyped_storage().data_ptr()
        for addr, site in wanted.items():
            if addr <= ptr < ends[addr]:
                refs = [r for r in gc.get_referrers(obj) if r is not obj]
                what = f"{tuple(obj.shape)} {obj.dtype}: " + "; ".join(describe_holder(r) for r in refs[:3])
                holders[site][what] += 1
    out.append("")
    for site, _ in ranked[:8]:
        out.append(f"- {site} ({largest[site]['size'] / 2**20:.1f} MiB): {stack(largest[site].get('frames', []))}")
        for what, n in holders[site].most_common(4):
            out.append(f"    held {n}x: {what[:300]}")
        if not holders[site]:
            out.append("    (no Python tensor holds it: a graph's, the compiler's or C++'s)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixtures", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-history", action="store_true", help="no allocation sites (less overhead)")
    parser.add_argument("--no-compile", action="store_true", help="serve without the compiled step (faster)")
    args = parser.parse_args()

    from wyoming_lina.engine import SamplingOptions
    from wyoming_lina.engine.synthesizer import SynthesisSettings, Synthesizer
    from wyoming_lina.engine.warmup import WarmUp
    from wyoming_lina.server.download import ModelFiles
    from wyoming_lina.server.runtime import load_runtime, max_frames_for
    from wyoming_lina.voices.store import VoiceStore

    device = torch.device("cuda")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu-memory-"))
    files = prepare(work, args.fixtures, tiny=False)
    torch.cuda.init()
    free, total = torch.cuda.mem_get_info(device)
    baseline = (total - free) / GIB
    stages = Stages(device)
    if not args.no_history:
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    torch.zeros(1, device=device)
    stages.mark("CUDA context")
    runtime = load_runtime(
        ModelFiles(files.lina, files.codec, files.codec_config, files.tokenizer),
        "cuda",
        "bfloat16",
        max_batch=args.max_batch,
    )
    if args.no_compile:
        runtime.engine.runner.compile_wanted = False
    params = sum(p.numel() * p.element_size() for p in runtime.model.parameters()) / GIB
    buffers = sum(b.numel() * b.element_size() for b in runtime.model.buffers()) / GIB
    codec = sum(p.numel() * p.element_size() for p in runtime.codec.parameters()) / GIB
    print(f"model parameters {params:.3f} GiB, model buffers (fused copies) {buffers:.3f} GiB, codec {codec:.3f} GiB")
    stages.mark("model and codec loaded")
    store = VoiceStore(files.data_dir, codec=runtime.codec, model=runtime.model, tokenizer=runtime.tokenizer)
    synth = Synthesizer(
        runtime.engine,
        runtime.tokenizer,
        store,
        SynthesisSettings(
            default_voice=PROMPT_VOICE, max_frames=max_frames_for(20), sampling=SamplingOptions(seed=SEED)
        ),
    )
    engine = runtime.engine
    engine.start()
    warm = WarmUp(engine, on_stage=stages.mark).start()

    async def request(text: str) -> None:
        async for _ in synth.synthesize(text, PROMPT_VOICE):
            pass

    async def run() -> None:
        await request(TEXTS[0])
        stages.mark("one request during the warm-up")
        await asyncio.to_thread(warm.done.wait)
        stages.mark("warm")
        await asyncio.gather(*(request(TEXTS[i % len(TEXTS)]) for i in range(args.clients)))
        stages.mark(f"{args.clients} concurrent requests")

    try:
        asyncio.run(run())
    finally:
        engine.stop()
    print(
        f"\n## GPU memory, --max-batch {args.max_batch} ({torch.cuda.get_device_name(device)}, torch {torch.__version__})\n"
    )
    print(f"model parameters {params:.3f} GiB, model buffers {buffers:.3f} GiB, codec parameters {codec:.3f} GiB\n")
    print("\n".join(stages.table(baseline)))
    if warm.error is not None:
        print(f"\nwarm-up error: {warm.error!r}")
    if not args.no_history:
        print()
        print("\n".join(live_allocations(args.top)))
    print(torch.cuda.memory_summary(device, abbreviated=True))


if __name__ == "__main__":
    main()
