"""What `make run` prints once everything is ready: how to call, endpoints, a dev token, examples."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from devrun.launch import ROOT
from devrun.sample_audio import SampleCall
from devrun.settings import RunSettings

DEV_USER = "alice"
# Long enough for an afternoon of trying things; `python -m devrun token` mints more.
BANNER_TOKEN_TTL_SECONDS = 12 * 3600


def grpcurl_path() -> str:
    """grpcurl from the PyPI wheel in this virtualenv (falls back to the name on PATH)."""
    local = Path(sys.executable).parent / "grpcurl"
    return str(local) if local.exists() else "grpcurl"


@dataclass(frozen=True)
class CallSetup:
    """What `make run` set up for calls, as the banner tells it (no keys: they are never printed).

    Attributes:
        page_url: The call page, or None when it is not served.
        livekit_url: The LiveKit server every process was given (LIVEKIT_URL).
        livekit_log: The log of the server make run started; None when it started none.
        livekit_missing: Where the server binary was looked for when it is missing (then there is no
            server and no worker: calls cannot connect); None otherwise.
        worker_log: The voice worker's log.
        worker_providers: The worker's default providers in words, once it is registered; else "".
        worker_problem: Why the worker is not running; "" when it is.
    """

    page_url: str | None
    livekit_url: str
    livekit_log: Path | None = None
    livekit_missing: Path | None = None
    worker_log: Path | None = None
    worker_providers: str = ""
    worker_problem: str = ""


def call_block(calls: CallSetup) -> list[str]:
    """The first thing a newcomer reads: how to make a voice call now, or loudly why they cannot."""
    if calls.livekit_missing is not None:
        missing = _shown(calls.livekit_missing)
        return _loud(
            [
                f"NO VOICE CALLS: the LiveKit server is not built ({missing} is missing).",
                "make run started no LiveKit server and no voice worker, so calls cannot connect.",
                "Install Go 1.26 or newer (https://go.dev/dl/), then run `make run` again: its bootstrap",
                "builds the server once (about 2 minutes).",
                "Or set LIVEKIT_SERVER_BIN to a livekit-server binary, or LIVEKIT_URL, LIVEKIT_API_KEY and",
                "LIVEKIT_API_SECRET to a server of yours (see README.md and .env.example).",
                "Everything else works: tokens, conversations, messages, `voice_worker simulate`.",
            ]
        )
    rule = "=" * 78
    lines = [rule, "MAKE A VOICE CALL"]
    if calls.page_url is not None:
        lines += [
            f"  1. Open {calls.page_url} in a browser (allow the microphone when it asks).",
            "  2. Sign in: paste the dev token printed below (the text after `export TOKEN=`).",
            '  3. Press "Voice call" and talk. The agent greets you first; answer after its greeting.',
        ]
    else:
        lines.append(
            "  The call page is not served (see the warning above); any LiveKit client can join with a"
        )
        lines.append("  token from /api/livekit/token (below).")
    if calls.livekit_log is not None:
        where = f"loopback only; log {_shown(calls.livekit_log)}"
    else:
        where = "LIVEKIT_URL; make run started no server"
    lines.append(f"  LiveKit server  {calls.livekit_url}  ({where})")
    if calls.worker_providers:
        lines.append(f"  voice worker    registered with LiveKit; {calls.worker_providers}")
        if calls.worker_log is not None:
            lines.append(f"                  log {_shown(calls.worker_log)}")
    lines.append(rule)
    if calls.worker_problem:
        log = f" Its log: {_shown(calls.worker_log)}." if calls.worker_log is not None else ""
        lines += _loud(
            [
                "The voice worker is NOT running, so calls connect but no agent answers:",
                calls.worker_problem,
                f"Fix that and restart make run.{log}",
            ]
        )
    return lines


def closing_line(calls: CallSetup | None) -> str:
    """The banner's last line (what stays on screen): the next step, or why there are no calls."""
    stop = "Ctrl-C stops everything."
    if calls is None:
        return f"==> {stop}"
    if calls.livekit_missing is not None:
        return f"==> No voice calls: the LiveKit server is not built (see above). {stop}"
    if calls.worker_problem:
        return f"==> No agent answers calls: the voice worker is not running (see above). {stop}"
    if calls.page_url is None:
        return f"==> LiveKit and the voice worker are ready. {stop}"
    return f'==> Voice call: open {calls.page_url}, sign in with the token, press "Voice call", talk. {stop}'


# Every create and send in the examples carries a fresh requestId (a JSON string): resending the
# same command with the same id after a 503 (the outcome is unknown) is then safe.
NEW_REQUEST_ID = "\"'\"$(python3 -c 'import uuid; print(uuid.uuid4())')\"'\""
CREATE_VOICE_DATA = '-d \'{"agentId":"default","channel":"CHANNEL_VOICE","requestId":' + NEW_REQUEST_ID + "}'"
SEND_HELLO_DATA = '-d \'{"text":"hello","requestId":' + NEW_REQUEST_ID + "}'"


def voice_call_example(settings: RunSettings, sample: SampleCall) -> list[str]:
    """The "try a voice call without LiveKit" lines: a conversation, a watcher, `voice_worker simulate`.

    The command carries what the worker needs to reach this mesh: the two service addresses and,
    in dev mode, `SYNTERA_DEV_MODE=true` so it signs its service token with the same dev service
    secret as the services (outside dev mode it reads SYNTERA_SERVICE_JWT_SECRET from the environment
    or `.env`, as the services do; a secret is never printed). Offline providers, whatever LIVEKIT_* says.
    """
    edge = f"http://{_client_host(settings.envoy_host)}:{settings.envoy_port}"
    run_dir = (ROOT / settings.run_dir).resolve()
    wav = _shown(sample.path) if sample.path is not None else "YOUR-RECORDING.wav"
    env = [
        f"CHAT_SVC_ADDRESS={_client_host(settings.chat_host)}:{settings.chat_port}",
        f"AGENT_SVC_ADDRESS={_client_host(settings.agent_host)}:{settings.agent_port}",
    ]
    if settings.effective_dev_mode:
        env.insert(0, "SYNTERA_DEV_MODE=true")
    env += [
        "VOICE_WORKER_PROVIDERS=offline",
        f"VOICE_WORKER_OUTBOX_DIR={_shown(run_dir / 'voice-outbox')}",
        "LOG_FORMAT=console",
    ]
    lines = [
        "Try a voice call without LiveKit: the agent pipeline (VAD, STT, responder, TTS; all offline) runs",
        "on a recording instead of a room, in real time, and its transcript reaches chat_svc as in a call.",
    ]
    if sample.path is not None:
        lines += [
            f"The recording {wav} was just made with espeak-ng (16 kHz mono); the caller says:",
            *[f'    "{sentence}"' for sentence in sample.sentences],
        ]
    else:
        lines += [
            f"NOTE: no sample recording was made ({sample.problem}).",
            "Use a 16-bit PCM WAV of your own in place of YOUR-RECORDING.wav below.",
        ]
    if not settings.effective_dev_mode:
        lines.append(
            "The worker signs in with SYNTERA_SERVICE_JWT_SECRET from your environment or ./.env, like the "
            "services."
        )
    lines += [
        "A new voice conversation for the call:",
        f"  VOICE_CID=$(curl -sS -X POST {edge}/v1/conversations \\",
        '    -H "authorization: Bearer $TOKEN" -H "content-type: application/json" \\',
        f"    {CREATE_VOICE_DATA} \\",
        "    | python3 -c 'import json,sys; "
        'print(json.load(sys.stdin)["conversation"]["conversationId"])\')',
        "Watch it live, e.g. in another terminal (set TOKEN and VOICE_CID there too):",
        f'  curl -N {edge}/v1/conversations/$VOICE_CID:watch -H "authorization: Bearer $TOKEN"',
        "Run the call (from this folder; about 40 s; the agent's voice is written to the --out file):",
        f"  {' '.join(env[:3])} \\",
        f"    {' '.join(env[3:])} \\",
        f'    {_shown(Path(sys.executable))} -m voice_worker simulate --conversation "$VOICE_CID" \\',
        f"    --wav {wav} --out {_shown(run_dir / 'reply.wav')}",
    ]
    return lines


def render_banner(
    settings: RunSettings,
    *,
    with_chat: bool,
    token: str,
    sample: SampleCall | None = None,
    calls: CallSetup | None = None,
) -> str:
    """The whole text printed after start-up (pure: the tests read it).

    `sample` is the voice example's recording; None leaves the example out (no voice worker).
    `calls` is what make run set up for calls: told first, and again in the last line.
    """
    edge = f"http://{_client_host(settings.envoy_host)}:{settings.envoy_port}"
    agent = f"{_client_host(settings.agent_host)}:{settings.agent_port}"
    chat = f"{_client_host(settings.chat_host)}:{settings.chat_port}"
    grpcurl = grpcurl_path()
    # Double-quoted so the shell expands $CID inside the JSON.
    token_body = (
        '"{\\"conversationId\\":\\"$CID\\",\\"userId\\":\\"' + DEV_USER + '\\",\\"agentId\\":\\"default\\"}"'
    )
    lines = [
        "",
        "The Syntera mesh is running. Ctrl-C stops everything.",
        "",
        *([*call_block(calls), ""] if calls is not None else []),
        "Endpoints",
        f"  Envoy (REST/JSON, gRPC-web, gRPC)  {edge}",
        f"  agent_svc (gRPC, reflection)       {agent}",
    ]
    if with_chat:
        lines.append(f"  chat_svc (gRPC, reflection)        {chat}")
    else:
        lines.append("  chat_svc                           not present yet (no chat_svc package)")
    if settings.uses_embedded_store:
        lines.append(f"  store (MongoDB wire protocol)      mongodb://127.0.0.1:{settings.mongodb_port}")
    lines.append(f"  Envoy admin (localhost only)       http://127.0.0.1:{settings.envoy_admin_port}")
    worker_up = calls is not None and bool(calls.worker_providers)
    lines += ["", *telemetry_lines(settings, with_chat=with_chat, with_worker=worker_up)]
    lines += [
        "",
        f"Dev user token for '{DEV_USER}' (12 h; more with `python -m devrun token --user NAME`):",
        f"  export TOKEN={token}",
        "",
    ]
    if settings.effective_dev_mode:
        lines += [
            "DEV MODE: its JWT secrets are public (they are in the repository), so anyone can sign tokens",
            "for this mesh; it listens on loopback only. Outside dev mode set SYNTERA_JWT_SECRET and",
            "SYNTERA_SERVICE_JWT_SECRET (see .env.example).",
            "",
        ]
    if with_chat:
        lines += [
            "Start a voice conversation (chat_svc checks that a conversation is yours) and keep its id:",
            f"  CID=$(curl -sS -X POST {edge}/v1/conversations \\",
            '    -H "authorization: Bearer $TOKEN" -H "content-type: application/json" \\',
            f"    {CREATE_VOICE_DATA} \\",
            "    | python3 -c 'import json,sys; "
            'print(json.load(sys.stdin)["conversation"]["conversationId"])\')',
        ]
    else:
        lines += [
            "Pick a conversation id (without chat_svc, dev mode does not check ownership):",
            "  CID=demo-1",
        ]
    lines += [
        "",
        "Get a LiveKit join token through Envoy (the REST path):",
        f"  curl -sS -X POST {edge}/api/livekit/token \\",
        '    -H "authorization: Bearer $TOKEN" -H "content-type: application/json" \\',
        f"    -d {token_body}",
        "",
        "Create the room / list its participants (these call the LiveKit server):",
        f'  curl -sS -X POST {edge}/api/livekit/room/create -H "authorization: Bearer $TOKEN" \\',
        '    -H "content-type: application/json" -d "{\\"conversationId\\":\\"$CID\\"}"',
        f'  curl -sS {edge}/api/livekit/room/$CID/participants -H "authorization: Bearer $TOKEN"',
        "",
        "grpcurl (reflection, no proto files needed):",
        f"  {grpcurl} -plaintext {agent} list",
        f"  {grpcurl} -plaintext {agent} describe syntera.livekit.v1.LiveKitService",
        f'  {grpcurl} -plaintext -H "authorization: Bearer $TOKEN" \\',
        f"    -d {token_body} \\",
        f"    {agent} syntera.livekit.v1.LiveKitService/GenerateToken",
    ]
    if with_chat:
        lines += [
            "",
            "Watch the conversation as newline-delimited JSON while sending it a message:",
            f'  curl -N {edge}/v1/conversations/$CID:watch -H "authorization: Bearer $TOKEN" &',
            f'  curl -sS -X POST {edge}/v1/conversations/$CID/messages -H "authorization: Bearer $TOKEN" \\',
            f'    -H "content-type: application/json" {SEND_HELLO_DATA}',
        ]
        if sample is not None:
            lines += ["", *voice_call_example(settings, sample)]
    lines += ["", closing_line(calls)]
    return "\n".join(lines)


def telemetry_lines(settings: RunSettings, *, with_chat: bool, with_worker: bool) -> list[str]:
    """Where each process's Prometheus metrics are, and where traces go."""
    lines = [
        "Metrics (Prometheus text; scrape or curl them)",
        f"  agent_svc     http://{_client_host(settings.agent_host)}:{settings.agent_metrics_port}/metrics",
    ]
    if with_chat:
        lines.append(
            f"  chat_svc      http://{_client_host(settings.chat_host)}:{settings.chat_metrics_port}/metrics"
        )
    if with_worker:
        host = _client_host(settings.worker_http_host)
        lines.append(f"  voice_worker  http://{host}:{settings.worker_metrics_port}/metrics")
    lines.append(f"  Envoy         http://127.0.0.1:{settings.envoy_admin_port}/stats/prometheus")
    if settings.otlp_endpoint:
        lines.append(f"Traces (OTLP) of every process, Envoy included, go to {settings.otlp_endpoint}")
    else:
        lines.append(
            "Traces are off; set OTEL_EXPORTER_OTLP_ENDPOINT to an OTLP/gRPC collector to turn them on."
        )
    return lines


def print_banner(
    settings: RunSettings,
    *,
    with_chat: bool,
    sample: SampleCall | None = None,
    calls: CallSetup | None = None,
) -> None:
    token = settings.user_token(DEV_USER, BANNER_TOKEN_TTL_SECONDS)
    print(render_banner(settings, with_chat=with_chat, token=token, sample=sample, calls=calls), flush=True)


def _loud(lines: list[str]) -> list[str]:
    bar = "!" * 78
    return [bar, *(f"!! {line}" for line in lines), bar]


def _client_host(host: str) -> str:
    # A wildcard bind is reachable on loopback; print an address a client can use.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - compared, not bound


def _shown(path: Path) -> str:
    """`path` as a user types it here: relative below the current folder, shell-quoted."""
    try:
        shown = str(path.relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    return shlex.quote(shown)
