"""Benchmark streaming Mimi against the `moshi` package's Mimi, in the same run.

Both codecs get the same random weights (full Kyutai configuration: 24 kHz, 12.5 Hz,
32 codebooks of 2048). Each one encodes `--seconds` of noise frame by frame (80 ms, 1920
samples per slot) and decodes every frame's codes right away, as a live speech-to-speech
loop would. The two codecs take turns frame by frame (alternating which goes first) so
that both see the same machine load. Printed per codec: the wall time and the real-time
factor (compute time / audio duration; below 1 is faster than real time), then the speed
ratio moshi / ours (above 1: ours is faster) and whether both produced the same codes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import ExitStack

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per slot (default 10)")
    parser.add_argument("--batch", type=int, default=1, help="streams in parallel (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--warmup-frames", type=int, default=4,
                        help="frames run before timing (default 4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_interleaved(runners: dict[str, tuple[Callable, Callable, Callable]],
                      wav: torch.Tensor, frame_size: int, warmup: int, device: torch.device
                      ) -> dict[str, tuple[float, torch.Tensor]]:
    """Stream `wav` [B, 1, N] through every runner (enter, encode, decode), frame by frame,
    alternating which runner goes first, so that both see the same machine load.
    Returns per runner the seconds spent in its own steps and its codes [B, K, T]."""
    frames = wav.shape[-1] // frame_size
    names = list(runners)
    elapsed = dict.fromkeys(names, 0.0)
    codes: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with torch.no_grad(), ExitStack() as stack:
        for name in names:  # warm-up in a separate streaming session
            enter, encode, decode = runners[name]
            with enter():
                for index in range(min(warmup, frames)):
                    decode(encode(wav[..., index * frame_size:(index + 1) * frame_size]))
        for name in names:
            stack.enter_context(runners[name][0]())
        for index in range(frames):
            frame = wav[..., index * frame_size:(index + 1) * frame_size]
            order = names if index % 2 == 0 else names[::-1]
            for name in order:
                _, encode, decode = runners[name]
                _synchronize(device)
                start = time.perf_counter()
                frame_codes = encode(frame)
                decode(frame_codes)
                _synchronize(device)
                elapsed[name] += time.perf_counter() - start
                codes[name].append(frame_codes)
    return {name: (elapsed[name], torch.cat(codes[name], dim=-1)) for name in names}


def _random_moshi_mimi(device: torch.device) -> torch.nn.Module:
    try:
        from moshi.models import loaders
    except ImportError as error:
        raise SystemExit(
            "dsm bench codec needs the `moshi` package as the reference "
            "(pip install moshi --no-deps)"
        ) from error
    from dsm.codecs.testing import randomize_codebooks

    model = loaders.get_mimi(None, num_codebooks=32, device=device)
    randomize_codebooks(model)
    return model.eval()


def main(args: argparse.Namespace) -> int:
    from dsm.codecs.mimi import Mimi, MimiConfig, check_state_dict, kyutai_to_dsm_key

    if args.seconds <= 0 or args.batch < 1:
        raise SystemExit("--seconds must be positive and --batch at least 1")
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    reference = _random_moshi_mimi(device)
    ours = Mimi(MimiConfig()).to(device)
    state = {kyutai_to_dsm_key(k): v for k, v in reference.state_dict().items()}
    check_state_dict(ours, state, "moshi's Mimi")
    ours.load_state_dict(state)
    ours.eval()

    frame_size = ours.frame_size
    frames = max(1, round(args.seconds * ours.frame_rate))
    duration = frames * frame_size / ours.sample_rate
    wav = 0.1 * torch.randn(args.batch, 1, frames * frame_size, device=device)
    print(f"Mimi full config (24 kHz, 12.5 Hz, 32 x 2048), random weights; streaming "
          f"encode+decode of {duration:.2f} s x batch {args.batch} on {device}, "
          f"{torch.get_num_threads()} torch threads")

    results = _time_interleaved(
        {
            "moshi": (lambda: reference.streaming(args.batch), reference.encode,
                      reference.decode),
            "dsm": (lambda: ours.streaming(args.batch), ours.encode_step, ours.decode_step),
        },
        wav, frame_size, args.warmup_frames, device)
    (ref_time, ref_codes), (our_time, our_codes) = results["moshi"], results["dsm"]
    for name, elapsed in (("moshi", ref_time), ("dsm", our_time)):
        print(f"  {name:6s} {elapsed:8.3f} s   real-time factor {elapsed / duration:.3f}   "
              f"({1000 * elapsed / frames:.1f} ms per 80 ms frame)")
    print(f"  ratio moshi/dsm: {ref_time / our_time:.2f}x "
          f"({'dsm faster' if our_time < ref_time else 'moshi faster'})")
    same = torch.equal(ref_codes, our_codes)
    print(f"  identical codes: {same}")
    return 0 if same else 1
