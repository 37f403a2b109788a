"""Steps per second of dsm's LMStreamer and of moshi's LMGen, same random weights, same run.

For each batch size, both generators step the same model (an LM preset with random
weights, loaded into moshi's LMModel and into dsm's MultistreamLM from one safetensors
file) on random input tokens with the same sampling settings (moshi's defaults:
temperature 0.8 / 0.7, top-k 250 / 25). Prints steps/s of each, their ratio, and on a GPU
how many real-time streams (12.5 steps/s each) the batch sustains. On CPU it also prints
the ratio of CPU time per step (process CPU seconds, all threads): on a shared machine
wall-clock rates move with the neighbours' load, CPU time much less. CPU runs use one
torch thread unless --threads says otherwise (thread stalls on a busy machine swamp what
is measured).

With --model, the weights are a real model's (a directory or a Hugging Face repo id, any
of Kyutai's types: stt, tts, hibiki, moshi), loaded into both from its file; a conditioned
model (Hibiki) runs with its conditions absent (learnt padding) in both.

Example: dsm bench lm --preset tiny-stt --batch 1,8,32
         dsm bench lm --preset stt-1b --batch 64,256,512 --device cuda --steps 100
         dsm bench lm --model kyutai/moshiko-pytorch-bf16 --batch 1,8 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch

REAL_TIME_STEPS_PER_S = 12.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny-stt",
                        help="LM preset with random weights (dsm.models.PRESETS)")
    parser.add_argument("--model", default=None,
                        help="instead of a preset: a model directory or Hugging Face repo id "
                        "(kyutai/stt-1b-en_fr[@REVISION]) whose LM weights both generators use")
    parser.add_argument("--batch", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating measurements of each generator; the best is kept "
                        "(a shared machine's noise only ever slows a round down)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="weights dtype (default float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="run dsm's step eagerly")
    parser.add_argument("--no-moshi", action="store_true", help="measure dsm only")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 on CPU, torch's own on CUDA)")


def _time_steps(step, inputs: torch.Tensor, steps: int,
                device: torch.device) -> tuple[float, float]:
    """Steps per second of `steps` calls: by the wall clock (device work included) and per
    second of this process's CPU time."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    for t in range(steps):
        step(inputs[t % inputs.shape[0]])
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return steps / wall, steps / max(cpu, 1e-9)


def main(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from dsm.models import load_lm, preset

    device = torch.device(args.device)
    threads = args.threads or (1 if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available")
        return 2
    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        print(f"error: --batch must be comma-separated integers, got {args.batch!r}")
        return 2
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    sampling = dict(temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
    if args.model is not None:
        try:
            ours, reference, name = _load_model(args.model, device, dtype, not args.no_moshi)
        except (ValueError, FileNotFoundError) as error:
            print(f"error: {error}")
            return 2
        return _run(args, ours, reference, name, device, dtype_name, batches, sampling)
    config = preset(args.preset)

    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lm.safetensors"
        if not args.no_moshi and config.audio_heads == "depformer":
            from moshi.models.lm import LMModel

            torch.manual_seed(0)
            with torch.device(device):
                reference = LMModel(**config.moshi_kwargs()).to(dtype).eval()
            state = {k: v.detach().contiguous().cpu() for k, v in reference.state_dict().items()}
        else:
            from dsm.models import build_lm

            torch.manual_seed(0)
            state = {k: v.contiguous() for k, v in build_lm(config).state_dict().items()}
        save_file(state, str(path))
        del state
        ours = load_lm(path, config, device=device, dtype=dtype).eval()

    return _run(args, ours, reference, f"preset {args.preset}", device, dtype_name, batches,
                sampling)


def _load_model(ref: str, device: torch.device, dtype: torch.dtype, with_moshi: bool
                ) -> tuple[torch.nn.Module, torch.nn.Module | None, str]:
    """dsm's LM of a model directory (or repo id) and, when asked, moshi's with its weights."""
    import copy

    from safetensors.torch import load_file

    from dsm.models import LMConfig, load_lm
    from dsm.models.model_dir import resolve_model

    directory = resolve_model(ref, "asr")
    config = LMConfig.from_json(directory / "config.json")
    weights = directory / str(config.extras.get("moshi_name", "model.safetensors"))
    ours = load_lm(directory, device=device, dtype=dtype).eval()
    reference = None
    if with_moshi and config.audio_heads == "depformer":
        from moshi.models.lm import LMModel
        from moshi.models.loaders import get_condition_fuser, get_conditioner_provider

        extra: dict = {}
        if config.conditioners:
            spec = copy.deepcopy({"conditioners": config.conditioners, "fuser": config.fuser})
            extra = {"condition_provider": get_conditioner_provider(config.dim, device, spec),
                     "fuser": get_condition_fuser(spec)}
        with torch.device(device):
            reference = LMModel(**config.moshi_kwargs(), **extra).to(dtype).eval()
        reference.load_state_dict(load_file(str(weights), device=str(device)))
        if reference.condition_provider is not None:
            reference.condition_provider.float()
    return ours, reference, f"model {ref}"


def _absent_conditions(lm: torch.nn.Module, reference: torch.nn.Module | None, batch: int,
                       streamer: object) -> dict:
    """Every slot of a conditioned model without its conditions (both generators alike)."""
    names = lm.condition_provider.names
    absent = lm.condition_sum([{n: None for n in names}])
    for slot in range(batch):
        streamer.set_condition(slot, absent)  # type: ignore[attr-defined]
    if reference is None:
        return {}
    from moshi.conditioners import ConditionAttributes

    attributes = [ConditionAttributes(text={n: None for n in names}, tensor={})] * batch
    return {"condition_tensors": reference.condition_provider.prepare_and_provide(attributes)}


def _run(args: argparse.Namespace, ours: torch.nn.Module, reference: torch.nn.Module | None,
         name: str, device: torch.device, dtype_name: str, batches: list[int],
         sampling: dict) -> int:
    from dsm.streaming.streamer import LMStreamer

    config = ours.config
    n_in = config.n_q - config.dep_q
    print(f"{name}: dim {config.dim}, {config.num_layers} layers, n_q {config.n_q}, "
          f"dep_q {config.dep_q}; device {device} ({dtype_name}), "
          f"threads {torch.get_num_threads()}; best of {args.rounds} alternating rounds of "
          f"{args.steps} steps each")
    header = f"{'batch':>6} {'dsm steps/s':>12} {'moshi steps/s':>14} {'ratio':>6}"
    if device.type == "cpu":
        header += f" {'CPU-time ratio':>15}"
    if device.type == "cuda":
        header += f" {'dsm RT streams':>15} {'moshi RT streams':>17}"
    print(header)
    generator = torch.Generator().manual_seed(1)
    for batch in batches:
        total = max(args.warmup, args.steps)
        inputs = torch.randint(0, config.card, (total, batch, n_in, 1), generator=generator)
        inputs = inputs.to(device)
        streamer = LMStreamer(ours, batch, cuda_graph=not args.no_cuda_graph, **sampling)
        conditions = {}
        if getattr(ours, "is_conditioned", False):
            conditions = _absent_conditions(ours, reference, batch, streamer)
        generator_ref = None
        exit_stack = ExitStack()
        exit_stack.enter_context(streamer)
        if reference is not None:
            from moshi.models.lm import LMGen

            generator_ref = LMGen(reference, **sampling, **conditions)
            exit_stack.enter_context(generator_ref.streaming(batch))
            exit_stack.enter_context(torch.no_grad())
        with exit_stack:
            for t in range(args.warmup):  # also captures dsm's CUDA graphs
                streamer.step(inputs[t])
                if generator_ref is not None:
                    generator_ref.step(inputs[t])
            ours_rate, ours_cpu, moshi_rate, moshi_cpu = 0.0, 0.0, None, 0.0
            for _ in range(max(1, args.rounds)):
                rate, cpu_rate = _time_steps(streamer.step, inputs, args.steps, device)
                ours_rate, ours_cpu = max(ours_rate, rate), max(ours_cpu, cpu_rate)
                if generator_ref is not None:
                    rate, cpu_rate = _time_steps(generator_ref.step, inputs, args.steps, device)
                    moshi_rate = max(moshi_rate or 0.0, rate)
                    moshi_cpu = max(moshi_cpu, cpu_rate)
        ratio = f"{ours_rate / moshi_rate:6.2f}" if moshi_rate else "   n/a"
        moshi_text = f"{moshi_rate:14.1f}" if moshi_rate else f"{'n/a':>14}"
        line = f"{batch:>6} {ours_rate:12.1f} {moshi_text} {ratio}"
        if device.type == "cpu":
            line += f" {ours_cpu / moshi_cpu:15.2f}" if moshi_rate else f" {'n/a':>15}"
        if device.type == "cuda":
            ours_rt = batch * min(1.0, ours_rate / REAL_TIME_STEPS_PER_S)
            moshi_rt = batch * min(1.0, moshi_rate / REAL_TIME_STEPS_PER_S) if moshi_rate else 0
            line += f" {ours_rt:15.0f} {moshi_rt:17.0f}"
        print(line, flush=True)
    if device.type == "cuda":
        print("RT streams: streams served in real time (12.5 steps/s each) at that batch size")
    return 0
