"""Real voice calls over the LiveKit server: latency as the caller hears it, worker CPU and memory.

`python -m bench voice_call` (or `python -m bench.voice_call [--turns 20] [--calls 1,5]`) starts its
own embedded store and mesh (`devrun.mesh.start_mesh`: the real LiveKit server, agent_svc, chat_svc,
Envoy and the voice worker with offline providers, at `make run`'s INFO log level), each in its own
process. The callers — headless LiveKit participants (`devrun.caller.Caller`) — run in this process,
the load generator, never in the processes they measure. Each caller gets its conversation and join
token through Envoy's REST paths as the page does, joins, waits for the greeting, then speaks
espeak-ng sentences in real time and waits for each answer to finish before the next one.

What is measured, per turn (every clock is this machine's, so the caller's and the worker's times
can be compared):
- voice-to-voice latency: from the end of the caller's speech (the moment its last audible 10 ms
  frame was handed to its microphone track; espeak-ng's trailing silence is trimmed off first) to
  the first audible (>= -45 dBFS) agent frame the caller received;
- where that time goes, from the turn's messages as chat_svc stored them (`Message.start_time`,
  `end_time` and `metrics`) — the parts add up to the caller's latency exactly;
- the voice worker's CPU seconds and RSS (the process and its espeak-ng children) idle, during 1
  call and during 5 concurrent calls. Calls run as threads of that one process, so that is the
  whole cost.

The figures depend on the machine and on what else runs on it; nothing asserts on them. Takes about
eight minutes with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np

from bench.stats import percentile
from devrun.caller import AUDIBLE_DBFS, Caller, CallerError, dbfs
from devrun.mesh import VOICE_WORKER, Mesh, start_mesh
from devrun.ports import free_port
from devrun.sample_audio import speak
from devrun.speech import word_errors
from devrun.store import EmbeddedStore
from servicekit import auth
from servicekit.prototime import to_seconds
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as res
from voice_worker.settings import VoiceWorkerSettings

BENCH_JWT_SECRET = "bench-voice-call-jwt-secret-0123456789abcdef-012345"  # noqa: S105 - loopback bench
LOG_LEVEL = "INFO"  # what `make run` uses
# Targets (issue 8) on a 2-core machine with offline providers.
TARGET_P50_MS = 800.0
TARGET_RSS_PER_CALL_MB = 100.0

# Things people say on a service call, spoken in turn by three espeak-ng voices.
SENTENCES = (
    "I would like to check the status of my order.",
    "My internet connection keeps dropping every evening.",
    "Can you send a technician tomorrow morning?",
    "I was charged twice for the same invoice.",
    "Please update the billing address on my account.",
    "The router lights are blinking orange.",
    "How long will the refund take to arrive?",
    "I need to cancel my subscription today.",
    "The delivery was left at the wrong address.",
    "Could you reset my password please?",
)
VOICES = ("en-us", "en-gb", "en-us+f3")
# Seconds between call starts at 5 calls: people do not all start talking in the same 10 ms.
CALL_STAGGER_SECONDS = 1.3
IDLE_SECONDS = 10.0
# A call's job ends some seconds after its caller hung up (the session closes, turns are flushed),
# and the worker takes at most 5 at once: each stretch starts once every earlier job has ended.
JOB_END_WITHIN_SECONDS = 90.0
ANSWER_WITHIN_SECONDS = 20.0
# A caller that has no agent after this long hangs up and calls again, at most MAX_REDIALS times.
NO_AGENT_SECONDS = 20.0
MAX_REDIALS = 2
# The agent's answer is over when nothing audible arrived for this long (then the caller speaks).
QUIET_SECONDS = 1.0
MIB = 1024 * 1024
# Every fourth sentence is said in two halves with a pause between them, of these lengths in turn:
# hesitations the agent must wait out (the end-of-turn silence is 0.5 s by default).
PAUSE_EVERY = 4
PAUSES = (0.30, 0.45)


# ---------------------------------------------------------------------------------------------
# Speech


@dataclass(frozen=True)
class Utterance:
    text: str
    samples: np.ndarray  # int16 mono
    rate: int
    pause: float = 0.0  # seconds of silence mid-sentence (0: said in one go)


def trimmed(samples: np.ndarray, rate: int) -> np.ndarray:
    """`samples` without leading and trailing 10 ms frames below the audible level.

    espeak-ng ends every sentence with about 0.3 s of silence; left in, the caller's "end of speech"
    would be 0.3 s late and every latency 0.3 s too short.
    """
    step = rate // 100
    frames = [samples[i : i + step] for i in range(0, len(samples), step)]
    audible = [n for n, f in enumerate(frames) if dbfs(f) >= AUDIBLE_DBFS]
    if not audible:
        return samples
    return samples[audible[0] * step : (audible[-1] + 1) * step]


def _spoken(text: str, voice: str) -> tuple[np.ndarray, int]:
    pcm, rate = speak(text, voice=voice)
    return trimmed(np.frombuffer(pcm.tobytes(), dtype=np.int16), rate), rate


def utterances(count: int, offset: int = 0) -> list[Utterance]:
    """`count` sentences; every `PAUSE_EVERY`th has a pause in the middle, as people hesitate."""
    out = []
    for n in range(offset, offset + count):
        text, voice = SENTENCES[n % len(SENTENCES)], VOICES[n % len(VOICES)]
        if n % PAUSE_EVERY != PAUSE_EVERY - 1:
            samples, rate = _spoken(text, voice)
            out.append(Utterance(text, samples, rate))
            continue
        pause = PAUSES[(n // PAUSE_EVERY) % len(PAUSES)]
        words = text.split()
        first, rate = _spoken(" ".join(words[: len(words) // 2]), voice)
        second, _ = _spoken(" ".join(words[len(words) // 2 :]), voice)
        silence = np.zeros(round(pause * rate), dtype=np.int16)
        out.append(Utterance(text, np.concatenate([first, silence, second]), rate, pause))
    return out


# ---------------------------------------------------------------------------------------------
# Worker resources


@dataclass(frozen=True)
class Usage:
    """CPU seconds and RSS of a process tree at one moment."""

    at: float
    cpu_s: float
    rss: int
    processes: int


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, float, int]:
    """(parent pid, CPU seconds incl. reaped children, RSS bytes) from /proc (Linux)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is field 3
    utime, stime, cutime, cstime = (int(fields[n]) for n in (11, 12, 13, 14))
    return int(fields[1]), (utime + stime + cutime + cstime) / _TICKS, int(fields[21]) * _PAGE


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents.setdefault(_stat(int(entry.name))[0], []).append(int(entry.name))
            except (OSError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def usage(pid: int) -> Usage:
    """The process `pid` and its descendants (espeak-ng, one per reply), summed.

    A child caught between fork and exec is still the worker's own image and maps all of its
    memory: its RSS is left out (it would count the worker twice), its CPU time is not.
    """
    _, cpu_s, rss = _stat(pid)
    image = os.readlink(f"/proc/{pid}/exe")
    children = _descendants(pid)
    for child in children:
        try:
            _, child_cpu, child_rss = _stat(child)
            forked_only = os.readlink(f"/proc/{child}/exe") == image
        except (OSError, ValueError):
            continue
        cpu_s += child_cpu
        rss += 0 if forked_only else child_rss
    return Usage(time.monotonic(), cpu_s, rss, 1 + len(children))


class Sampler:
    """Samples a process tree's CPU time and RSS every `interval` s on a thread."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self._pid = pid
        self._interval = interval
        self.samples: list[Usage] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.samples.append(usage(self._pid))
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.samples.append(usage(self._pid))

    def now(self) -> Usage:
        sample = usage(self._pid)
        self.samples.append(sample)
        return sample

    def peak_rss(self, start: float, end: float) -> int:
        return max((s.rss for s in self.samples if start <= s.at <= end), default=0)


@dataclass(frozen=True)
class Window:
    """The worker over one stretch of time."""

    seconds: float
    cpu_s: float
    peak_rss: int
    end_rss: int
    processes: int

    @property
    def core_percent(self) -> float:
        return 100.0 * self.cpu_s / self.seconds if self.seconds > 0 else math.nan


@contextmanager
def window(sampler: Sampler, into: list[Window]) -> Iterator[None]:
    first = sampler.now()
    yield
    last = sampler.now()
    into.append(
        Window(
            seconds=last.at - first.at,
            cpu_s=last.cpu_s - first.cpu_s,
            peak_rss=sampler.peak_rss(first.at, last.at),
            end_rss=last.rss,
            processes=last.processes,
        )
    )


# ---------------------------------------------------------------------------------------------
# Calls


@dataclass
class Turn:
    """One thing the caller said and the answer it heard; times are unix seconds."""

    call: int
    text: str  # what the caller said
    pause: float  # mid-sentence pause in what the caller said (0: none)
    spoken_start: float
    spoken_end: float
    heard: float | None  # first audible agent frame after spoken_end
    talked_over: bool  # the agent was audible while the caller was still speaking
    user: list[res.Message] = field(default_factory=list)  # stored user turns for this utterance
    agent: res.Message | None = None  # the stored agent turn the caller heard first
    replies: int = 0  # stored agent turns answering this utterance (more than 1: it was cut)

    @property
    def latency(self) -> float | None:
        return None if self.heard is None else self.heard - self.spoken_end


@dataclass
class CallResult:
    index: int
    conversation_id: str
    seconds: float
    turns: list[Turn]
    messages: list[res.Message] = field(default_factory=list)
    transport: str = ""
    jitter_buffer_ms: float | None = None
    rtt_ms: float | None = None
    stored_user: int = 0
    stored_agent: int = 0
    redials: int = 0  # times the caller got no agent and called again
    leads_ms: list[int] = field(default_factory=list)  # the caller's capture lead per utterance


@dataclass(frozen=True)
class Worker:
    """The voice worker as this bench started it: its settings and its HTTP port."""

    env: dict[str, str]
    http_port: int

    def setting(self, name: str) -> str:
        """The setting `name` as the worker runs with it: its environment, else the default."""
        info = VoiceWorkerSettings.model_fields[name]
        alias = info.validation_alias
        value = self.env.get(alias) if isinstance(alias, str) else None
        return str(value if value is not None else info.default)

    async def active_jobs(self) -> int:
        """Calls the worker is running now (LiveKit Agents' `GET /worker`)."""
        async with httpx.AsyncClient(timeout=5) as http:
            info = (await http.get(f"http://127.0.0.1:{self.http_port}/worker")).json()
        return int(info.get("active_jobs", 0))  # proto JSON leaves out zero

    async def idle(self) -> None:
        """Waits until the worker runs no call (a job ends some seconds after its caller left)."""
        deadline = time.monotonic() + JOB_END_WITHIN_SECONDS
        jobs = -1
        while time.monotonic() < deadline:
            jobs = await self.active_jobs()
            if jobs == 0:
                return
            await asyncio.sleep(0.5)
        print(f"  (the worker still ran {jobs} call(s) after {JOB_END_WITHIN_SECONDS:.0f} s)")


def wall_offset() -> float:
    """Add to a `time.monotonic()` reading to get unix seconds (the worker stamps turns with those)."""
    return time.time() - time.monotonic()


async def new_conversation(mesh: Mesh, user: str) -> tuple[str, str, str]:
    """CreateConversation(VOICE) and a join token through Envoy's REST paths: (id, url, token)."""
    assert mesh.envoy_url is not None
    headers = {"authorization": f"Bearer {auth.mint(mesh.jwt_secret, user, ttl_seconds=3600)}"}
    async with httpx.AsyncClient(base_url=mesh.envoy_url, headers=headers, timeout=30) as http:
        created = await http.post(
            "/v1/conversations",
            # A retry after a 503 with the same id cannot make a second conversation.
            json={"agentId": "default", "channel": "CHANNEL_VOICE", "requestId": uuid.uuid4().hex},
        )
        created.raise_for_status()
        conversation_id = created.json()["conversation"]["conversationId"]
        joined = await http.post(
            "/api/livekit/token",
            json={"conversationId": conversation_id, "userId": user, "agentId": "default"},
        )
        joined.raise_for_status()
        body = joined.json()
    return conversation_id, body["url"], body["token"]


async def stored_messages(
    mesh: Mesh, user: str, conversation_id: str, done: Callable[[list[res.Message]], bool]
) -> list[res.Message]:
    """ListMessages through Envoy (native gRPC) until `done` holds or 30 s passed."""
    assert mesh.envoy_addr is not None
    metadata = (("authorization", f"Bearer {auth.mint(mesh.jwt_secret, user, ttl_seconds=600)}"),)
    messages: list[res.Message] = []
    deadline = time.monotonic() + 30
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as channel:
        stub = api_grpc.ConversationServiceStub(channel)
        while time.monotonic() < deadline:
            response = await stub.ListMessages(
                api.ListMessagesRequest(conversation_id=conversation_id, page_size=500),
                metadata=metadata,
                timeout=10,
            )
            messages = list(response.messages)
            if done(messages):
                break
            await asyncio.sleep(0.3)
    return messages


def word_error_rate(turns: Sequence[Turn]) -> float:
    """Word error of the stored user turns against what was said (all of a cut utterance's turns)."""
    errors = total = 0
    for t in turns:
        e, n = word_errors(t.text, " ".join(m.text for m in t.user))
        errors, total = errors + e, total + n
    return errors / total if total else math.nan


def finals(messages: Sequence[res.Message], role: res.Role.ValueType) -> list[res.Message]:
    return [m for m in messages if m.role == role and m.final and m.source == res.MESSAGE_SOURCE_TRANSCRIPT]


def match(turns: list[Turn], messages: list[res.Message]) -> None:
    """Pairs each turn with the stored user turn(s) it produced and the agent turn the caller heard.

    A turn owns what was stored from just before its caller started speaking to just before the
    caller's next utterance: more than one user turn there means the agent cut the utterance.
    """
    users = [m for m in finals(messages, res.ROLE_USER) if m.HasField("start_time")]
    agents = [m for m in finals(messages, res.ROLE_AGENT) if m.HasField("start_time")]
    for n, turn in enumerate(turns):
        start = turn.spoken_start - 1.0
        end = turns[n + 1].spoken_start - 1.0 if n + 1 < len(turns) else math.inf
        turn.user = [m for m in users if start <= to_seconds(m.start_time) < end]
        turn.replies = sum(start <= to_seconds(m.start_time) < end for m in agents)
        if turn.heard is not None:
            heard_by = [m for m in agents if start <= to_seconds(m.start_time) <= turn.heard + 0.05]
            turn.agent = heard_by[-1] if heard_by else None


async def transport_facts(caller: Caller) -> tuple[str, float | None, float | None]:
    """The caller's selected ICE path, its round-trip time and the mean receive jitter buffer delay."""
    try:
        report = await caller.room.get_rtc_stats()
    except Exception as exc:  # noqa: BLE001 - facts for the report only
        return f"(no stats: {exc})", None, None
    # LiveKit 1.13 may carry both directions on one peer connection: look at both.
    stats = [*report.publisher_stats, *report.subscriber_stats]
    candidates: dict[str, str] = {}
    for s in stats:
        kind = s.WhichOneof("stats")
        if kind == "local_candidate":
            c = s.local_candidate.candidate
            candidates[s.local_candidate.rtc.id] = f"{c.protocol} {c.address}:{c.port}"
        elif kind == "remote_candidate":
            c = s.remote_candidate.candidate
            candidates[s.remote_candidate.rtc.id] = f"{c.protocol} {c.address}:{c.port}"
    path, rtt, jitter, busiest = "", None, None, -1
    for s in stats:
        kind = s.WhichOneof("stats")
        if kind == "candidate_pair" and s.candidate_pair.candidate_pair.nominated:
            pair = s.candidate_pair.candidate_pair
            if pair.bytes_received > busiest:
                busiest = pair.bytes_received
                local = candidates.get(pair.local_candidate_id, "?")
                remote = candidates.get(pair.remote_candidate_id, "?")
                path = f"{local} -> {remote}"
                rtt = pair.current_round_trip_time * 1000
        elif kind == "inbound_rtp" and s.inbound_rtp.stream.kind == "audio":
            inbound = s.inbound_rtp.inbound
            if inbound.jitter_buffer_emitted_count:
                jitter = inbound.jitter_buffer_delay / inbound.jitter_buffer_emitted_count * 1000
    return path, rtt, jitter


async def one_call(mesh: Mesh, index: int, says: list[Utterance], start_after: float) -> CallResult:
    await asyncio.sleep(start_after)
    user = f"bench-caller-{index}"
    redials = 0
    while True:
        conversation_id, url, token = await new_conversation(mesh, user)
        caller = Caller()
        await caller.join(url, token)
        try:
            await caller.wait_for_agent(within=NO_AGENT_SECONDS)
            break
        except CallerError:
            # LiveKit gives a job to no worker when the worker answers "full"; a person would
            # hang up and call again. Counted and printed: it is a finding, not noise.
            await caller.leave()
            redials += 1
            if redials > MAX_REDIALS:
                raise
            await asyncio.sleep(2.0)
    to_wall = wall_offset()
    turns: list[Turn] = []
    started = time.monotonic()
    async with caller:
        await caller.wait_for_agent_speech(after=0, within=60)  # the greeting
        await caller.wait_until_agent_quiet(quiet_for=QUIET_SECONDS, within=60)
        for utterance in says:
            start = time.monotonic()
            end = await caller.say(utterance.samples, utterance.rate)
            talked_over = caller.heard.first_audible_after(start) is not None
            try:
                heard: float | None = await caller.wait_for_agent_speech(
                    after=end, within=ANSWER_WITHIN_SECONDS
                )
            except CallerError:
                heard = None
            turns.append(
                Turn(
                    call=index,
                    text=utterance.text,
                    pause=utterance.pause,
                    spoken_start=start + to_wall,
                    spoken_end=end + to_wall,
                    heard=None if heard is None else heard + to_wall,
                    talked_over=talked_over,
                )
            )
            await caller.wait_until_agent_quiet(quiet_for=QUIET_SECONDS, within=90)
        path, rtt, jitter = await transport_facts(caller)
    seconds = time.monotonic() - started

    def complete(messages: list[res.Message]) -> bool:
        return (
            len(finals(messages, res.ROLE_USER)) >= len(says)
            and len(finals(messages, res.ROLE_AGENT)) >= len(says) + 1
        )

    messages = await stored_messages(mesh, user, conversation_id, complete)
    match(turns, messages)
    return CallResult(
        index=index,
        conversation_id=conversation_id,
        seconds=seconds,
        turns=turns,
        transport=path,
        rtt_ms=rtt,
        jitter_buffer_ms=jitter,
        messages=messages,
        redials=redials,
        leads_ms=list(caller.leads_ms),
        stored_user=len(finals(messages, res.ROLE_USER)),
        stored_agent=len(finals(messages, res.ROLE_AGENT)),
    )


async def run_calls(mesh: Mesh, calls: int, turns_per_call: int) -> tuple[list[CallResult], list[str]]:
    """The calls' results, and what went wrong in calls that failed as a whole."""
    jobs = [
        one_call(mesh, n, utterances(turns_per_call, offset=n * 3), start_after=n * CALL_STAGGER_SECONDS)
        for n in range(calls)
    ]
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    results = [o for o in outcomes if isinstance(o, CallResult)]
    failures = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    return results, failures


# ---------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class Part:
    name: str
    span: str
    values: list[float]


def _ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:7.0f}" if values else "      -"


def _mean_ms(values: Sequence[float]) -> str:
    return f"{statistics.fmean(values) * 1000:7.0f}" if values else "      -"


def breakdown(turns: list[Turn]) -> list[Part]:
    """The caller's latency cut at the moments the worker stored; complete turns only."""
    up, eot, stt, ttft, ttfb, glue, down = [], [], [], [], [], [], []
    for t in turns:
        if t.heard is None or t.agent is None or not t.user or not t.user[-1].HasField("end_time"):
            continue
        user, agent = t.user[-1], t.agent
        worker_end = to_seconds(user.end_time)
        agent_start = to_seconds(agent.start_time)
        m = agent.metrics
        if not (m.HasField("end_of_turn_delay") and m.HasField("llm_time_to_first_token")):
            continue
        e = m.end_of_turn_delay.ToTimedelta().total_seconds()
        f = m.llm_time_to_first_token.ToTimedelta().total_seconds()
        b = (
            m.tts_time_to_first_byte.ToTimedelta().total_seconds()
            if m.HasField("tts_time_to_first_byte")
            else 0.0
        )
        up.append(worker_end - t.spoken_end)
        eot.append(e)
        if m.HasField("transcription_delay"):
            stt.append(m.transcription_delay.ToTimedelta().total_seconds())
        ttft.append(f)
        ttfb.append(b)
        glue.append(agent_start - worker_end - e - f - b)
        down.append(t.heard - agent_start)
    return [
        Part(
            "caller -> worker",
            "caller's last audible frame handed to its track -> worker's end of speech (user "
            "Message.end_time: where the worker's VAD places the end, back-dated by the silence it "
            "waited for): caller's 20-30 ms capture lead (devrun.caller.LEAD_MS), Opus, SFU, the "
            "worker's jitter buffer and 20 ms input frames, and the VAD's lag (the probability falls "
            "below its threshold ~75 ms after the speech)",
            up,
        ),
        Part(
            "end-of-turn delay",
            "worker's end of speech -> user turn committed: the end-of-turn silence, and waiting for "
            "the transcript if it is later (metrics.end_of_turn_delay)",
            eot,
        ),
        Part(
            "  of which STT",
            "worker's end of speech -> the turn's final transcript: Whisper, started after the "
            "transcribe-after silence, reported once the end-of-turn silence is over "
            "(metrics.transcription_delay; inside the end-of-turn delay, not added to it)",
            stt,
        ),
        Part("LLM first token", "LLM request -> first token (metrics.llm_time_to_first_token)", ttft),
        Part("TTS first byte", "text sent to TTS -> first audio (metrics.tts_time_to_first_byte)", ttfb),
        Part(
            "worker, the rest",
            "the worker's own time not in the figures above: commit -> LLM start, LLM -> TTS "
            "(sentence chunking), first audio -> first frame handed to the room (agent "
            "Message.start_time)",
            glue,
        ),
        Part(
            "worker -> caller",
            "agent's first frame handed to its LiveKit track -> first audible frame received by the "
            "caller (Opus, SFU, caller's jitter buffer, quiet onset below -45 dBFS)",
            down,
        ),
    ]


def dump(results: list[CallResult]) -> None:
    """Every turn as the caller lived it and every stored message, on one time line per call."""
    for r in results:
        origin = min((t.spoken_start for t in r.turns), default=0.0)
        print(f"  call {r.index} ({r.conversation_id}), seconds from its first utterance:")
        events: list[tuple[float, str]] = []
        for t in r.turns:
            heard = f"{t.heard - origin:7.2f}" if t.heard is not None else "   none"
            events.append(
                (
                    t.spoken_start - origin,
                    f"caller says {t.spoken_start - origin:7.2f} .. {t.spoken_end - origin:7.2f} "
                    f"(pause {t.pause:.2f}), hears the agent at {heard}",
                )
            )
        for m in r.messages:
            if m.HasField("start_time"):
                start = to_seconds(m.start_time) - origin
                end = f"{to_seconds(m.end_time) - origin:7.2f}" if m.HasField("end_time") else "      ?"
                who = "user " if m.role == res.ROLE_USER else "agent"
                events.append((start, f"  stored {who} {start:7.2f} .. {end}: {m.text[:60]!r}"))
        for _, line in sorted(events):
            print(f"    {line}")


def report(label: str, results: list[CallResult], win: Window, bench_cpu_s: float) -> dict[str, float]:
    turns = [t for r in results for t in r.turns]
    latencies = [t.latency for t in turns if t.latency is not None]
    missed = sum(t.heard is None for t in turns)
    talked_over = sum(t.talked_over for t in turns)
    split = sum(len(t.user) > 1 or t.replies > 1 for t in turns)
    unmatched = sum(not t.user for t in turns)
    calls = len(results)
    call_minutes = sum(r.seconds for r in results) / 60
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n== {label}: {calls} concurrent call(s), {len(turns)} turns (load average now {load}) ==")
    low, high = (min(latencies, default=math.nan), max(latencies, default=math.nan))
    print(
        "voice-to-voice latency (end of the caller's speech -> first audible agent frame at the caller):\n"
        f"  p50 {percentile(latencies, 50) * 1000:.0f} ms, p95 {percentile(latencies, 95) * 1000:.0f} ms, "
        f"min {low * 1000:.0f} ms, max {high * 1000:.0f} ms over {len(latencies)} answered turns"
    )
    print(
        f"  turn taking: unanswered within {ANSWER_WITHIN_SECONDS:.0f} s: {missed}; agent audible while the "
        f"caller was still speaking: {talked_over}; one utterance answered as several turns: {split}; "
        f"no stored user turn found: {unmatched}"
    )
    redials = sum(r.redials for r in results)
    if redials:
        print(
            f"  calls that got no agent within {NO_AGENT_SECONDS:.0f} s, so the caller hung up and called "
            f"again: {redials} (LiveKit dispatched no agent to the first call)"
        )
    for pause in sorted({t.pause for t in turns if t.pause}):
        paused = [t for t in turns if t.pause == pause]
        cut = sum(t.talked_over or len(t.user) > 1 or t.replies > 1 for t in paused)
        print(
            f"  mid-sentence pause of {pause:.2f} s: the agent cut in on {cut} of {len(paused)} such turns; "
            f"word error of their stored text {word_error_rate(paused):.0%}"
        )
    print(
        f"  word error of the stored user turns (Whisper tiny.en on espeak-ng over Opus): "
        f"{word_error_rate(turns):.0%} over {len(turns)} turns"
    )
    parts = breakdown(turns)
    complete = len(parts[0].values)
    print(
        f"where the time goes ({complete} turns with every figure stored; ms; the parts except "
        "'of which STT' add up to the latency, exactly for the means):"
    )
    print(f"  {'part':<18} {'p50':>7} {'p95':>7} {'mean':>7}  measured from -> to")
    for part in parts:
        figures = f"{_ms(part.values, 50)} {_ms(part.values, 95)} {_mean_ms(part.values)}"
        print(f"  {part.name:<18} {figures}  {part.span}")
    whole = [t.latency for t in turns if t.latency is not None and t.agent is not None and t.user]
    if whole:
        print(
            f"  {'(caller latency)':<18} {_ms(whole, 50)} {_ms(whole, 95)} {_mean_ms(whole)}  the same turns"
        )
    for r in results:
        rtt = f"{r.rtt_ms:.1f} ms" if r.rtt_ms is not None else "?"
        jitter = f"{r.jitter_buffer_ms:.0f} ms" if r.jitter_buffer_ms is not None else "?"
        print(
            f"  call {r.index}: ICE path {r.transport or '?'}, RTT to the SFU {rtt}, mean receive jitter "
            f"buffer {jitter}; stored {r.stored_user} user and {r.stored_agent} agent turns "
            f"(incl. the greeting) in chat_svc; capture lead (inside the latency): "
            f"{', '.join(f'{ms} ms x {n}' for ms, n in sorted(Counter(r.leads_ms).items()))}"
        )
    per_call_minute = win.cpu_s / call_minutes if call_minutes else math.nan
    print(
        f"voice worker: {win.cpu_s:.1f} CPU s over {win.seconds:.0f} s wall = {win.core_percent:.0f} % "
        f"of one core ({per_call_minute:.1f} CPU s per call-minute); peak RSS {win.peak_rss / MIB:.0f} MiB "
        f"({win.processes} process(es))"
    )
    print(
        f"load generator (this process: {calls} caller(s), Opus, resampling): {bench_cpu_s:.1f} CPU s "
        f"= {100 * bench_cpu_s / win.seconds:.0f} % of one core, on the same 2 cores"
    )
    return {"p50": percentile(latencies, 50), "peak_rss": win.peak_rss}


def hops(mesh: Mesh) -> str:
    return (
        "hops each call really makes (all on this machine):\n"
        "  setup  bench -> Envoy REST -> chat_svc (CreateConversation) -> store; "
        "bench -> Envoy REST -> agent_svc (token; ownership via chat_svc); the token's room config "
        "dispatches the agent\n"
        "  audio  caller (this process, LiveKit rtc SDK) -> LiveKit SFU "
        f"(livekit-server :{mesh.livekit.port}, WebRTC over UDP :{mesh.livekit.udp_port}) -> voice worker "
        "(VAD -> Whisper -> responder -> espeak-ng) -> SFU -> caller\n"
        "  turns  voice worker -> outbox -> chat_svc ReportTranscript (gRPC, direct) -> store; "
        "read back here with ListMessages through Envoy"
    )


def worker_settings_line(worker: Worker) -> str:
    s = worker.setting
    return (
        f"worker: offline providers (silero VAD, faster-whisper tiny.en x{s('whisper_threads')} threads, "
        f"scripted responder, espeak-ng); max {s('max_calls')} calls; log level {LOG_LEVEL}; the "
        f"user's turn ends after {s('end_of_turn_silence_seconds')} s of silence, Whisper "
        f"transcribes after {s('transcribe_after_silence_seconds')} s"
    )


async def bench(
    turns: int, call_counts: Sequence[int], workdir: Path, worker_env: dict[str, str], verbose: bool
) -> int:
    store = EmbeddedStore(workdir / "store", workdir / "store.log")
    store.start()
    try:
        mesh = start_mesh(store, workdir / "mesh", jwt_secret=BENCH_JWT_SECRET, log_level=LOG_LEVEL)
        try:
            # Started here rather than by start_mesh: with a known HTTP port (its /worker page says
            # how many calls it runs) and the settings under test.
            port = free_port()
            worker = Worker(mesh.worker_env | worker_env | {"VOICE_WORKER_HTTP_PORT": str(port)}, port)
            mesh.start(VOICE_WORKER, extra_env=worker.env)
            return await _measure(mesh, worker, turns, call_counts, verbose)
        finally:
            mesh.close()
    finally:
        store.stop()


async def _measure(mesh: Mesh, worker: Worker, turns: int, call_counts: Sequence[int], verbose: bool) -> int:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load} (1, 5, 15 min; anything else running shares the 2 cores)"
    )
    print(worker_settings_line(worker))
    print(hops(mesh))
    windows: list[Window] = []
    with Sampler(mesh.process(VOICE_WORKER).pid) as sampler:
        await asyncio.sleep(2.0)
        with window(sampler, windows):
            await asyncio.sleep(IDLE_SECONDS)
        idle = windows[-1]
        print(
            f"\nvoice worker idle (registered, VADs and Whisper loaded, no call): "
            f"{idle.core_percent:.1f} % of one core, RSS {idle.end_rss / MIB:.0f} MiB"
        )
        # One unmeasured call: it warms every path the calls take (the worker loads Whisper and
        # the VADs as it starts, before any call).
        warm_started = time.monotonic()
        warm, failed = await run_calls(mesh, 1, 1)
        first = warm[0].turns[0].latency if warm and warm[0].turns else None
        print(
            f"warm-up call (not counted): {time.monotonic() - warm_started:.0f} s, first turn latency "
            f"{(first or math.nan) * 1000:.0f} ms; worker RSS after it, "
            f"models loaded: {sampler.now().rss / MIB:.0f} MiB{'; FAILED: ' + failed[0] if failed else ''}"
        )
        figures: dict[int, dict[str, float]] = {}
        for calls in call_counts:
            await worker.idle()
            per_call = math.ceil(turns / calls)
            before = time.process_time()
            with window(sampler, windows):
                results, failures = await run_calls(mesh, calls, per_call)
            bench_cpu = time.process_time() - before
            figures[calls] = report(f"{calls} call(s)", results, windows[-1], bench_cpu)
            for failure in failures:
                print(f"  a call FAILED: {failure}")
            failed += failures
            if verbose:
                dump(results)
    summary(figures, idle)
    return 1 if failed else 0


def summary(figures: dict[int, dict[str, float]], idle: Window) -> None:
    print("\n== targets (2-core machine, offline providers) ==")
    if 1 in figures:
        p50 = figures[1]["p50"] * 1000
        met = "met" if p50 < TARGET_P50_MS else "NOT met"
        print(f"  p50 voice-to-voice latency at 1 call < {TARGET_P50_MS:.0f} ms: {p50:.0f} ms -> {met}")
    counts = sorted(figures)
    if len(counts) >= 2:
        low, high = counts[0], counts[-1]
        per_call = (figures[high]["peak_rss"] - figures[low]["peak_rss"]) / (high - low) / MIB
        met = "met" if per_call < TARGET_RSS_PER_CALL_MB else "NOT met"
        print(
            f"  RSS per additional call < {TARGET_RSS_PER_CALL_MB:.0f} MB: {per_call:.1f} MiB "
            f"(peak at {high} calls {figures[high]['peak_rss'] / MIB:.0f} MiB - peak at {low} call "
            f"{figures[low]['peak_rss'] / MIB:.0f} MiB, / {high - low}) -> {met}"
        )
        print(
            f"  (idle worker before any call, Whisper and the VADs loaded and shared by every call: "
            f"{idle.end_rss / MIB:.0f} MiB)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.voice_call", description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="turns per scenario, at least (default 20)")
    parser.add_argument("--calls", default="1,5", help="concurrent calls per scenario (default 1,5)")
    parser.add_argument(
        "--worker-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a VOICE_WORKER_* setting for this run, e.g. VOICE_WORKER_TRANSCRIBE_AFTER_SILENCE_SECONDS=0.55",
    )
    parser.add_argument("--verbose", action="store_true", help="print every turn and stored message")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the store and every process's log here (default: deleted)",
    )
    args = parser.parse_args(argv)
    if any("=" not in s for s in args.worker_setting):
        parser.error("--worker-setting takes NAME=VALUE")
    worker_env = dict(s.split("=", 1) for s in args.worker_setting)
    if any(not name.startswith("VOICE_WORKER_") for name in worker_env):
        parser.error("--worker-setting takes VOICE_WORKER_* settings only")
    call_counts = [int(c) for c in args.calls.split(",") if c.strip()]
    if args.turns < 1 or not call_counts or any(not 1 <= c <= 5 for c in call_counts):
        parser.error("--turns >= 1 and --calls from 1 to 5 (the worker takes 5 calls)")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(bench(args.turns, call_counts, args.workdir, worker_env, args.verbose))
    with tempfile.TemporaryDirectory(prefix="syntera-bench-voice-call-") as tmp:
        return asyncio.run(bench(args.turns, call_counts, Path(tmp), worker_env, args.verbose))


if __name__ == "__main__":
    raise SystemExit(main())
