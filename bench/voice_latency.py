"""Offline turn latency: end of user speech → first agent audio, p50/p95 over 20 turns.

`python -m bench.voice_latency [--turns 20]` runs the real pipeline (silero VAD, Whisper tiny.en,
profile responder, espeak-ng) on a simulated call in real time, so it takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from bench.stats import percentile
from bench.voice_common import SERVICE_SENTENCES, CountingSink, Profiles, conversation_wav, offline_settings
from servicekit import logs
from voice_worker.call import DispatchInfo
from voice_worker.simulate import run_call_on_wav


async def main(turns: int) -> None:
    logs.configure("WARNING", "console")
    os.environ["HF_HUB_OFFLINE"] = "1"
    sentences = [SERVICE_SENTENCES[i % len(SERVICE_SENTENCES)] for i in range(turns)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = offline_settings(tmp)
        result = await run_call_on_wav(
            settings,
            dispatch=DispatchInfo("bench", "bench"),
            # Gaps longer than a reply, so every turn is answered in full.
            wav=conversation_wav(sentences, lead=3.0, gap=9.0, tail=9.0),
            profiles=Profiles(),
            sink=CountingSink(),
            out_path=Path(tmp) / "reply.wav",
        )
    lat = result.response_latencies
    print(f"offline turn latency (end of user speech -> first agent audio), {len(lat)} turns:")
    p50, p95 = percentile(lat, 50) * 1000, percentile(lat, 95) * 1000
    print(f"  p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {max(lat) * 1000:.0f} ms")
    print(
        "  (includes the end-of-turn silence, VOICE_WORKER_END_OF_TURN_SILENCE_SECONDS: the VAD's"
        " end-of-speech silence and the minimum endpointing delay, one value)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=20)
    asyncio.run(main(parser.parse_args().turns))
