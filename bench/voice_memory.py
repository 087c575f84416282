"""Peak memory of one simulated session, and of five concurrent sessions, in one worker process.

`python -m bench.voice_memory` runs each case in a fresh child process and reports its peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile

from bench.voice_common import SERVICE_SENTENCES, CountingSink, Profiles, conversation_wav, offline_settings
from servicekit import logs
from voice_worker.call import DispatchInfo
from voice_worker.simulate import run_call_on_wav


async def _sessions(count: int) -> None:
    logs.configure("WARNING", "console")
    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        settings = offline_settings(tmp)
        wav = conversation_wav(SERVICE_SENTENCES[:2], lead=3.0, gap=9.0, tail=9.0)
        await asyncio.gather(
            *(
                run_call_on_wav(
                    settings,
                    dispatch=DispatchInfo(f"bench{i}", "bench"),
                    wav=wav,
                    profiles=Profiles(),
                    sink=CountingSink(),
                )
                for i in range(count)
            )
        )
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_sessions(args.child))
        return
    for count in (1, 5):
        out = subprocess.run(
            [sys.executable, "-m", "bench.voice_memory", "--child", str(count)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "LOG_LEVEL": "WARNING"},
        ).stdout
        peak_kib = int(out.strip().splitlines()[-1])
        print(f"peak RSS, {count} concurrent simulated session(s) in one process: {peak_kib / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
