"""Live captions from a microphone through a streaming server (`dsm serve` or Kyutai's).

Captures 24 kHz mono audio with sounddevice, sends it in 80 ms frames to
/api/asr-streaming and prints each word as soon as it arrives. Ctrl+C stops.

Examples:
  dsm mic --server ws://127.0.0.1:8080
  dsm mic --list-devices
  dsm mic --server ws://gpu-box:8080 --device 3 --api-key public_token

Needs the `sounddevice` package and the PortAudio library (pip install 'dsm[mic]';
on Debian: apt-get install libportaudio2).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="URL", help="server, e.g. ws://127.0.0.1:8080")
    parser.add_argument("--device", default=None,
                        help="input device index or name (see --list-devices)")
    parser.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    parser.add_argument("--api-key", default=None, help="sent as the kyutai-api-key header")
    parser.add_argument("--seconds", type=float, default=None, help="stop after S seconds")


def main(args: argparse.Namespace) -> int:
    from dsm.streaming.serve.clients import RemoteError, list_devices, run_mic

    try:
        if args.list_devices:
            print(list_devices())
            return 0
        if not args.server:
            print("dsm mic: give --server URL (or --list-devices)")
            return 2
        device = int(args.device) if args.device is not None and args.device.isdigit() else args.device
        run_mic(args.server, device=device, api_key=args.api_key, seconds=args.seconds)
        print()
        return 0
    except RuntimeError as error:  # RemoteError included: missing PortAudio, server errors
        kind = "server" if isinstance(error, RemoteError) else "microphone"
        print(f"dsm mic: {kind}: {error}")
        return 1
    except OSError as error:
        print(f"dsm mic: cannot reach {args.server}: {error}")
        return 1
    except Exception as error:  # sounddevice.PortAudioError, websockets' refused handshake
        print(f"dsm mic: {type(error).__name__}: {error}")
        return 1
