"""The LiveKit Agents worker: joins rooms it is dispatched to and runs a call there.

Registered under an agent name, so LiveKit dispatches it only when a token or `DispatchAgent`
names it (naming an agent turns automatic dispatch off).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import structlog
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess, cli
from livekit.agents.voice import room_io

from servicekit import context, ids, logs
from servicekit.client import ServiceCredentials
from voice_worker import metrics
from voice_worker.call import DispatchInfo, open_call
from voice_worker.clients import SERVICE_NAME, AgentProfiles, ChatTranscriptSink
from voice_worker.history import ConversationHistory, Turn
from voice_worker.providers import ProviderChoiceError, import_plugins, prewarm
from voice_worker.sender import drain_orphans
from voice_worker.settings import VoiceWorkerSettings
from voice_worker.typed import TypedMessageFollower, answer_typed

log = structlog.get_logger("voice_worker.worker")

# LiveKit gives a job's shutdown callbacks this long before killing the process.
SHUTDOWN_PROCESS_TIMEOUT = 15.0
# How long a drain keeps retrying an earlier process's turns while chat_svc is unreachable.
LEFTOVER_BUDGET_SECONDS = SHUTDOWN_PROCESS_TIMEOUT * 20
# The load at which the LiveKit server stops offering a worker jobs: its `agents.target_load`,
# 0.7 by default (livekit-server pkg/agent/config.go, the same on LiveKit Cloud). A worker's claim on a
# job is `target_load - load`, and a claim of 0 is no claim ("no servers available"), so a worker
# reporting calls / max_calls (0.8 with 4 of 5 calls) is never offered its 5th call. The load we
# report is scaled so that it reaches this figure only when every call slot is taken.
SERVER_TARGET_LOAD = 0.7
# Offline calls read the caller's audio in 20 ms frames, not LiveKit's default 50 ms: the VAD judges
# 32 ms windows, and a window waiting for the rest of a longer frame ends every turn later (on
# average ~15 ms with 50 ms frames, ~8 ms with 20 ms). 10 ms frames would save ~4 ms more but put
# twice the frames through Python for every call, on a worker that is CPU-bound at 5 calls on 2
# cores. Cloud calls keep the default.
OFFLINE_INPUT_FRAME_MS = 20


class DispatchMetadataError(ValueError):
    """The dispatch metadata does not say which conversation the call belongs to."""


def parse_dispatch(metadata: str, room_name: str) -> DispatchInfo:
    """The call agent_svc dispatched us to (servicekit.ids writes and reads its metadata).

    Without a conversation in the metadata (a dispatch made by hand, say), the room's name says it.
    """
    dispatch = ids.read_dispatch(metadata)
    conversation_id = dispatch.conversation_id or ids.conversation_of_room(room_name)
    if not conversation_id:
        raise DispatchMetadataError("dispatch metadata has no conversationId and the room name has none")
    return DispatchInfo(
        conversation_id=conversation_id,
        agent_id=dispatch.agent_id or ids.DEFAULT_AGENT_ID,
        resume=dispatch.resume,
    )


class CallCount:
    """Calls in progress in this process, counted by the calls themselves.

    LiveKit Agents' own `active_jobs` keeps the process's first job listed after its call ended (seen
    with the thread executor in 1.8.9: one slot stays taken for good), so the worker would report
    itself full one call early and LiveKit would answer "no worker is available".
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def started(self) -> None:
        with self._lock:
            self._count += 1

    def ended(self) -> None:
        with self._lock:
            self._count = max(0, self._count - 1)

    def count(self) -> int:
        with self._lock:
            return self._count


CALLS = CallCount()


def worker_load(calls: int, max_calls: int) -> float:
    """The load reported to LiveKit: `SERVER_TARGET_LOAD` exactly when all `max_calls` are taken."""
    if calls >= max_calls:
        return SERVER_TARGET_LOAD  # exactly: the scaled figure may round to just below it
    return SERVER_TARGET_LOAD * calls / max_calls


def load_threshold(max_calls: int) -> float:
    """The load from which the worker answers LiveKit "not available" and reports itself full.

    Half a call below the full load: LiveKit Agents compares its estimate (the load plus the calls it
    accepted but has not started, each estimated at load / calls) with `<`, and a threshold equal to
    the full load would let float rounding accept a call too many or refuse the last one.
    """
    return SERVER_TARGET_LOAD * (max_calls - 0.5) / max_calls


def build_server(settings: VoiceWorkerSettings) -> AgentServer:
    """The AgentServer with our job entry point registered under `settings.agent_name`.

    Jobs run as threads of this process, not as child processes: the offline models (VAD, Whisper,
    the TTS voice) are loaded once and shared by every call, which keeps each extra call to tens of
    megabytes instead of a whole interpreter with its own models. The worker's load is its share of
    `max_calls` (scaled to the server's target load, see `worker_load`), so LiveKit stops sending it
    calls when it is full rather than when the CPU is busy (speech recognition makes the CPU figure
    jump on a small machine).
    """
    max_calls = settings.max_calls
    # LiveKit plugins register themselves on import and refuse to do so off the main thread; jobs
    # run on threads, so import every plugin a call may use here.
    import_plugins()

    def load(server: AgentServer) -> float:
        return worker_load(CALLS.count(), max_calls)

    server = AgentServer(
        ws_url=settings.livekit_url or None,
        api_key=settings.livekit_api_key or None,
        api_secret=settings.livekit_api_secret.get_secret_value() or None,
        job_executor_type=JobExecutorType.THREAD,
        load_fnc=load,
        load_threshold=load_threshold(max_calls),
        # With no call running, LiveKit's per-call load estimate is threshold / idle processes.
        num_idle_processes=max_calls,
        shutdown_process_timeout=SHUTDOWN_PROCESS_TIMEOUT,
        host=settings.http_host,
        port=settings.http_port,
    )

    metrics.count_calls(CALLS.count)

    def setup(proc: JobProcess) -> None:
        # By now the LiveKit CLI has added its own log handler; our JSON lines are the only ones.
        logs.reclaim_stdlib()
        # The VADs (and so the ONNX runtime) and Whisper before a job arrives, not during a greeting.
        prewarm(settings)

    server.setup_fnc = setup

    @server.rtc_session(agent_name=settings.agent_name)
    async def entry(ctx: JobContext) -> None:
        await run_job(ctx, settings)

    return server


async def run_job(ctx: JobContext, settings: VoiceWorkerSettings) -> None:
    """One dispatched call: profile, providers, transcripts through the outbox, greeting."""
    # The job id is the call's request id: in every log line of the call, here and in chat_svc
    # (it goes with every ReportTranscript), and in tasks started from here.
    context.bind(None, ctx.job.id)
    dispatch = parse_dispatch(ctx.job.metadata, ctx.job.room.name)
    credentials = ServiceCredentials(settings.service_jwt_secret.get_secret_value(), SERVICE_NAME)
    sink = ChatTranscriptSink(settings.chat_svc_address, credentials, settings.rpc_timeout_seconds)
    profiles = AgentProfiles(settings.agent_svc_address, credentials, settings.rpc_timeout_seconds)
    # Turns an earlier process could not deliver (again, in case chat_svc was down at start-up):
    # sent in the background, never blocking the call.
    leftovers = asyncio.create_task(_drain(settings, sink))
    # An agent taking over a call another one left carries on with the conversation so far.
    history = await _history(settings, credentials, dispatch.conversation_id) if dispatch.resume else None
    try:
        call = await open_call(
            settings, call_id=ctx.job.id, dispatch=dispatch, profiles=profiles, sink=sink, history=history
        )
    except ProviderChoiceError as exc:
        log.error("call refused: provider choice", job_id=ctx.job.id, problem=str(exc))
        leftovers.cancel()
        await profiles.aclose()
        await sink.aclose()
        return

    async def answer(seq: int, text: str) -> None:
        await answer_typed(call.session, seq, text)

    # The user's typed messages reach the agent through chat_svc (see voice_worker.typed).
    typed = TypedMessageFollower(settings.chat_svc_address, credentials, dispatch.conversation_id, answer)

    async def on_shutdown() -> None:
        CALLS.ended()
        await typed.aclose()
        await call.finish()
        leftovers.cancel()
        await profiles.aclose()
        await sink.aclose()

    # Counted from here, where its shutdown callback (which uncounts it) is registered.
    CALLS.started()
    ctx.add_shutdown_callback(on_shutdown)
    audio_input: room_io.AudioInputOptions | bool = True
    if call.providers.mode == "offline":
        audio_input = room_io.AudioInputOptions(frame_size_ms=OFFLINE_INPUT_FRAME_MS)
    await call.session.start(
        call.agent,
        room=ctx.room,
        # Video calls: the agent joins with audio only; it does not need the video. Typed messages
        # come through chat_svc, never through the room's text input.
        room_options=room_io.RoomOptions(audio_input=audio_input, video_input=False, text_input=False),
        record=False,
    )
    await ctx.connect()
    typed.start()


async def _history(
    settings: VoiceWorkerSettings, credentials: ServiceCredentials, conversation_id: str
) -> list[Turn]:
    history = ConversationHistory(settings.chat_svc_address, credentials, settings.rpc_timeout_seconds)
    try:
        return await history.newest(conversation_id)
    finally:
        await history.aclose()


async def _drain(settings: VoiceWorkerSettings, sink: ChatTranscriptSink) -> int:
    return await drain_orphans(
        settings.outbox_dir,
        sink,
        initial_backoff=settings.retry_initial_seconds,
        max_backoff=settings.retry_max_seconds,
        budget_seconds=LEFTOVER_BUDGET_SECONDS,
    )


def start_leftover_drain(settings: VoiceWorkerSettings) -> threading.Thread:
    """Sends the turns a killed worker left in its outbox, as soon as this worker starts.

    Waiting for the next call would leave a crashed call's last turns missing from its conversation
    for as long as nobody calls. The drain runs on its own thread and event loop beside the LiveKit
    worker, which owns the main loop; outbox files are locked by their owners, so a drain never
    takes the outbox of a call in progress.
    """

    async def drain() -> None:
        credentials = ServiceCredentials(settings.service_jwt_secret.get_secret_value(), SERVICE_NAME)
        sink = ChatTranscriptSink(settings.chat_svc_address, credentials, settings.rpc_timeout_seconds)
        try:
            emptied = await _drain(settings, sink)
            log.info("leftover turns drained at start-up", outboxes=emptied)
        finally:
            await sink.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(drain()), name="outbox-leftovers", daemon=True)
    thread.start()
    return thread


def run_worker(settings: VoiceWorkerSettings, command: str) -> None:
    """Hands over to the LiveKit CLI (`start` for production, `dev` for reloads and debug logs)."""
    if not settings.livekit_url:
        raise SystemExit(
            "LIVEKIT_URL must be set to run the worker (use `simulate` to try it without LiveKit)"
        )
    sys.argv = [sys.argv[0], command]
    start_leftover_drain(settings)
    _keep_our_log_handler()
    cli.run_app(build_server(settings))


def _keep_our_log_handler() -> None:
    """Lets LiveKit's CLI set up logging as it does, then takes the root logger back.

    The CLI adds a JSON handler of its own on start (other field names, and the `extra` fields we
    keep out of logs on purpose): every stdlib record must come out once, in our format.
    """
    from livekit.agents.cli import cli as livekit_cli

    original = livekit_cli.setup_logging  # type: ignore[attr-defined]  # its module-level name

    def setup_logging(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        logs.reclaim_stdlib()

    livekit_cli.setup_logging = setup_logging  # type: ignore[attr-defined]
