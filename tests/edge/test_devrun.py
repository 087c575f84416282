"""`make run` (python -m devrun): the token command, port checks, the banner, and a full run end to end."""

from __future__ import annotations

import array
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
from livekit import api

from devrun import sample_audio
from devrun.banner import CallSetup, render_banner
from devrun.envoy_config import envoy_binary
from devrun.livekit_server import LiveKitKeys, LiveKitServerConfig, start_server
from devrun.ports import free_port
from devrun.run import (
    PlanError,
    PortTaken,
    _worker_settings,
    check_ports,
    plan_livekit,
    plan_ports,
    providers_summary,
)
from devrun.sample_audio import SampleCall, make_sample_call, write_sample_call
from devrun.settings import RunSettings
from servicekit import auth
from servicekit.settings import DEV_JWT_SECRET
from voice_worker.settings import VoiceWorkerSettings

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "The Syntera mesh is running"
# The banner's last line starts with this (the next step, or why there are no calls).
LAST_LINE = "==> "


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any of the mesh's variables, plus `extra`."""
    prefixes = (
        "SYNTERA_",
        "LIVEKIT_",
        "MONGODB_",
        "AGENT_SVC_",
        "CHAT_SVC_",
        "ENVOY_",
        "CORS_",
        "RUN_DIR",
        "WEB_",
        "VOICE_WORKER_",
        "LLM_",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


def _devrun(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devrun", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.unit
def test_token_command_uses_the_dev_secret_by_default(tmp_path: Path) -> None:
    result = _devrun("token", "--user", "alice", "--ttl", "120", env=_clean_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    principal = auth.verify(result.stdout.strip(), DEV_JWT_SECRET)
    assert principal.subject == "alice"
    assert principal.is_service is False


@pytest.mark.unit
def test_token_command_uses_the_configured_secret(tmp_path: Path) -> None:
    secret = "a-configured-secret-of-at-least-32-characters"
    result = _devrun("token", "--user", "bob", env=_clean_env(SYNTERA_JWT_SECRET=secret), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert auth.verify(result.stdout.strip(), secret).subject == "bob"


@pytest.mark.unit
@pytest.mark.parametrize("args", [("--user", "not valid!"), ("--user", "alice", "--ttl", "0")])
def test_token_command_refuses_bad_input(args: tuple[str, ...], tmp_path: Path) -> None:
    result = _devrun("token", *args, env=_clean_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert "error:" in result.stderr


@pytest.mark.unit
def test_a_taken_port_is_reported_with_its_variable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        settings = RunSettings.model_validate({"ENVOY_PORT": taken, "AGENT_SVC_PORT": free_port()})
        with pytest.raises(PortTaken, match=rf"127\.0\.0\.1:{taken} is in use \(set ENVOY_PORT"):
            check_ports(plan_ports(settings, with_store=True, with_chat=True))


@pytest.mark.unit
def test_a_taken_livekit_media_port_is_reported_with_its_variable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        udp = sock.getsockname()[1]
        settings = RunSettings.model_validate({"LIVEKIT_PORT": udp - 2})
        server = plan_livekit(settings).server
        assert server is not None
        plans = plan_ports(settings, with_store=False, with_chat=False, livekit=server)
        with pytest.raises(PortTaken, match=rf"127\.0\.0\.1:{udp}/udp is in use \(set LIVEKIT_PORT"):
            check_ports([p for p in plans if p.variable == "LIVEKIT_PORT"])


@pytest.mark.unit
def test_the_port_plan_holds_livekit_and_the_worker_in_start_order() -> None:
    settings = RunSettings.model_validate({"LIVEKIT_PORT": 17880, "VOICE_WORKER_HTTP_PORT": 18081})
    server = LiveKitServerConfig(keys=LiveKitKeys.generate(), port=settings.livekit_port)
    plans = plan_ports(settings, with_store=True, with_chat=True, livekit=server, with_worker=True)
    assert [(p.port, p.protocol, p.variable) for p in plans] == [
        (27017, "tcp", "MONGODB_PORT"),
        (17880, "tcp", "LIVEKIT_PORT"),
        (17882, "udp", "LIVEKIT_PORT"),
        (17883, "udp", "LIVEKIT_PORT"),
        (50051, "tcp", "AGENT_SVC_PORT"),
        (9471, "tcp", "AGENT_SVC_METRICS_PORT"),
        (50052, "tcp", "CHAT_SVC_PORT"),
        (9472, "tcp", "CHAT_SVC_METRICS_PORT"),
        (8080, "tcp", "ENVOY_PORT"),
        (9901, "tcp", "ENVOY_ADMIN_PORT"),
        (18081, "tcp", "VOICE_WORKER_HTTP_PORT"),
        (9473, "tcp", "VOICE_WORKER_METRICS_PORT"),
    ]
    # A worker health port of 0 is picked by the worker: nothing to check.
    zero = RunSettings.model_validate({"VOICE_WORKER_HTTP_PORT": 0})
    assert "VOICE_WORKER_HTTP_PORT" not in {
        p.variable for p in plan_ports(zero, with_store=False, with_chat=True, with_worker=True)
    }


@pytest.mark.unit
def test_livekit_plan_starts_a_loopback_server_with_keys_made_for_the_run() -> None:
    settings = RunSettings.model_validate({})
    plan, again = plan_livekit(settings), plan_livekit(settings)
    assert plan.url == "ws://127.0.0.1:7880"
    assert plan.server is not None
    assert plan.server.port == settings.livekit_port == 7880
    assert plan.keys.api_key.startswith("syntera-")
    assert plan.keys != again.keys  # made for each run, never a well-known dev secret
    assert plan.binary == ROOT / ".tools" / "bin" / "livekit-server"


@pytest.mark.unit
def test_livekit_plan_uses_given_keys_for_its_own_server() -> None:
    secret = "a-livekit-secret-of-at-least-32-characters"
    settings = RunSettings.model_validate(
        {"LIVEKIT_API_KEY": "mykey", "LIVEKIT_API_SECRET": secret, "LIVEKIT_PORT": 17880}
    )
    plan = plan_livekit(settings)
    assert plan.keys == LiveKitKeys("mykey", secret)
    assert plan.url == "ws://127.0.0.1:17880"
    assert plan.server is not None
    assert plan.server.keys == plan.keys


@pytest.mark.unit
def test_livekit_url_means_that_server_and_none_of_our_own() -> None:
    settings = RunSettings.model_validate(
        {"LIVEKIT_URL": "wss://proj.livekit.cloud", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"}
    )
    plan = plan_livekit(settings)
    assert (plan.url, plan.server, plan.starts_server, plan.missing) == (
        "wss://proj.livekit.cloud",
        None,
        False,
        False,
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"LIVEKIT_API_KEY": "k"}, "set both LIVEKIT_API_KEY and LIVEKIT_API_SECRET"),
        ({"LIVEKIT_API_SECRET": "s"}, "set both LIVEKIT_API_KEY and LIVEKIT_API_SECRET"),
        ({"LIVEKIT_URL": "wss://lk.example"}, "LIVEKIT_URL is set, so LIVEKIT_API_KEY"),
    ],
)
def test_half_a_livekit_configuration_is_refused_before_anything_starts(
    env: dict[str, str], problem: str
) -> None:
    with pytest.raises(PlanError, match=problem):
        plan_livekit(RunSettings.model_validate(env))


@pytest.mark.unit
def test_a_missing_server_binary_is_planned_as_missing(tmp_path: Path) -> None:
    settings = RunSettings.model_validate({"LIVEKIT_SERVER_BIN": str(tmp_path / "nope")})
    plan = plan_livekit(settings)
    assert plan.missing
    assert not plan.starts_server
    assert plan.binary == tmp_path / "nope"


@pytest.mark.unit
def test_worker_providers_are_offline_for_a_local_server_and_cloud_for_livekit_cloud() -> None:
    base = {"SYNTERA_DEV_MODE": "true", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 40}
    local, problem = _worker_settings(base | {"LIVEKIT_URL": "ws://127.0.0.1:7880"})
    assert local is not None, problem
    assert providers_summary(local).startswith("offline providers")
    cloud, problem = _worker_settings(base | {"LIVEKIT_URL": "wss://proj.livekit.cloud"})
    assert cloud is not None, problem
    assert providers_summary(cloud).startswith("cloud providers: LiveKit Inference")
    assert "s" * 40 not in providers_summary(cloud)


@pytest.mark.unit
def test_a_worker_setting_it_would_refuse_is_named_before_it_starts() -> None:
    env = {
        "SYNTERA_DEV_MODE": "true",
        "LIVEKIT_URL": "ws://127.0.0.1:7880",
        "LIVEKIT_AGENT_NAME": "Bad Name!",
    }
    settings, problem = _worker_settings(env)
    assert settings is None
    assert "LIVEKIT_AGENT_NAME" in problem


@pytest.mark.unit
def test_dev_mode_unless_configured_otherwise() -> None:
    assert RunSettings.model_validate({}).effective_dev_mode is True
    assert RunSettings.model_validate({"SYNTERA_JWT_SECRET": "x" * 40}).effective_dev_mode is False
    assert RunSettings.model_validate({"SYNTERA_DEV_MODE": "false"}).effective_dev_mode is False


CALLS = CallSetup(
    page_url="http://127.0.0.1:5173/",
    livekit_url="ws://127.0.0.1:7880",
    livekit_log=Path("/somewhere/.run/logs/livekit.log"),
    worker_log=Path("/somewhere/.run/logs/voice_worker.log"),
    worker_providers="offline providers: faster-whisper, scripted responder, espeak-ng",
)


@pytest.mark.unit
def test_banner_tells_a_newcomer_first_to_open_the_page_and_press_voice_call() -> None:
    text = render_banner(RunSettings.model_validate({}), with_chat=True, token="TOKEN123", calls=CALLS)
    call = text.index("MAKE A VOICE CALL")
    assert call < text.index("Endpoints")  # before anything else
    assert "Open http://127.0.0.1:5173/ in a browser" in text
    assert 'Press "Voice call" and talk' in text
    assert (
        "LiveKit server  ws://127.0.0.1:7880  (loopback only; log /somewhere/.run/logs/livekit.log)" in text
    )
    assert "voice worker    registered with LiveKit; offline providers" in text
    assert "export TOKEN=TOKEN123" in text
    assert "grpcurl -plaintext 127.0.0.1:50051 list" in text
    assert text.splitlines()[-1].startswith(LAST_LINE + "Voice call: open http://127.0.0.1:5173/")
    assert "!!" not in text  # nothing to warn about
    assert "NOT configured" not in text


@pytest.mark.unit
def test_banner_prints_every_metrics_address_and_where_traces_go() -> None:
    settings = RunSettings.model_validate({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    text = render_banner(settings, with_chat=True, token="T", calls=CALLS)
    for address in (
        "http://127.0.0.1:9471/metrics",
        "http://127.0.0.1:9472/metrics",
        "http://127.0.0.1:9473/metrics",
        "http://127.0.0.1:9901/stats/prometheus",
    ):
        assert address in text
    assert "go to http://127.0.0.1:4317" in text
    untraced = render_banner(RunSettings.model_validate({}), with_chat=True, token="T", calls=None)
    assert "9473" not in untraced  # no worker running, no worker metrics
    assert "Traces are off" in untraced


@pytest.mark.unit
def test_banner_says_loudly_what_to_install_when_the_livekit_server_is_missing() -> None:
    missing = CallSetup(
        page_url="http://127.0.0.1:5173/",
        livekit_url="ws://127.0.0.1:7880",
        livekit_missing=Path("/somewhere/.tools/bin/livekit-server"),
        worker_problem="there is no LiveKit server to register with",
    )
    text = render_banner(RunSettings.model_validate({}), with_chat=True, token="T", calls=missing)
    assert "!! NO VOICE CALLS: the LiveKit server is not built (/somewhere/.tools/bin/livekit-server" in text
    assert "Install Go 1.26 or newer" in text
    assert "calls cannot connect" in text
    assert "LIVEKIT_SERVER_BIN" in text
    assert 'Press "Voice call"' not in text
    assert text.index("NO VOICE CALLS") < text.index("Endpoints")
    assert text.splitlines()[-1].startswith(LAST_LINE + "No voice calls")


@pytest.mark.unit
def test_banner_says_loudly_why_the_voice_worker_is_not_running() -> None:
    broken = CallSetup(
        page_url="http://127.0.0.1:5173/",
        livekit_url="ws://127.0.0.1:7880",
        livekit_log=Path("/l.log"),
        worker_log=Path("/w.log"),
        worker_problem="LIVEKIT_AGENT_NAME must be 1 to 63 characters",
    )
    text = render_banner(RunSettings.model_validate({}), with_chat=True, token="T", calls=broken)
    assert "!! The voice worker is NOT running, so calls connect but no agent answers:" in text
    assert "!! LIVEKIT_AGENT_NAME must be 1 to 63 characters" in text
    assert "Its log: /w.log" in text
    assert text.splitlines()[-1].startswith(LAST_LINE + "No agent answers calls")


@pytest.mark.unit
def test_banner_for_a_livekit_server_elsewhere_says_make_run_started_none() -> None:
    elsewhere = CallSetup(
        page_url=None,
        livekit_url="wss://proj.livekit.cloud",
        worker_log=Path("/w.log"),
        worker_providers="cloud providers: LiveKit Inference deepgram/nova-3",
    )
    text = render_banner(RunSettings.model_validate({}), with_chat=True, token="T", calls=elsewhere)
    assert "LiveKit server  wss://proj.livekit.cloud  (LIVEKIT_URL; make run started no server)" in text
    assert "The call page is not served" in text
    assert "registered with LiveKit; cloud providers" in text


@pytest.mark.unit
def test_banner_prints_a_voice_call_that_reaches_this_mesh() -> None:
    settings = RunSettings.model_validate({"AGENT_SVC_PORT": 61001, "CHAT_SVC_PORT": 61002})
    sample = SampleCall(Path("/somewhere/sample-call.wav"))
    text = render_banner(settings, with_chat=True, token="T", sample=sample)
    assert "SYNTERA_DEV_MODE=true CHAT_SVC_ADDRESS=127.0.0.1:61002 AGENT_SVC_ADDRESS=127.0.0.1:61001" in text
    assert "VOICE_WORKER_PROVIDERS=offline" in text
    assert '-m voice_worker simulate --conversation "$VOICE_CID"' in text
    assert "--wav /somewhere/sample-call.wav" in text
    assert "/v1/conversations/$VOICE_CID:watch" in text
    assert '"channel":"CHANNEL_VOICE"' in text
    # Without a voice worker (no sample asked for) the example is left out.
    assert "voice_worker simulate" not in render_banner(settings, with_chat=True, token="T")


@pytest.mark.unit
def test_printed_voice_call_settings_line_up_with_the_dev_mesh() -> None:
    """The worker, given exactly the printed variables, signs and dials as make run's services expect."""
    settings = RunSettings.model_validate({})
    text = render_banner(settings, with_chat=True, token="T", sample=SampleCall(Path("/s.wav")))
    printed = dict(re.findall(r"\b([A-Z_]+)=(\S+)", text[text.index("SYNTERA_DEV_MODE=true") :]))
    worker = VoiceWorkerSettings.model_validate(printed)
    assert worker.chat_svc_address == f"{settings.chat_host}:{settings.chat_port}"
    assert worker.agent_svc_address == f"{settings.agent_host}:{settings.agent_port}"
    assert worker.jwt_secret.get_secret_value() == settings.effective_jwt_secret
    assert worker.default_mode == "offline"


@pytest.mark.unit
def test_banner_voice_call_outside_dev_mode_never_prints_the_secret() -> None:
    secret = "a-configured-secret-of-at-least-32-characters"
    service_secret = "another-configured-secret-of-32-characters-or-more"
    settings = RunSettings.model_validate(
        {"SYNTERA_JWT_SECRET": secret, "SYNTERA_SERVICE_JWT_SECRET": service_secret}
    )
    text = render_banner(settings, with_chat=True, token="T", sample=SampleCall(Path("/s.wav")))
    assert secret not in text
    assert service_secret not in text
    assert "SYNTERA_DEV_MODE=true" not in text
    assert "SYNTERA_SERVICE_JWT_SECRET from your environment" in text


@pytest.mark.unit
def test_banner_says_why_there_is_no_sample_recording() -> None:
    sample = SampleCall(
        None, problem="espeak-ng is not installed (Debian/Ubuntu: sudo apt-get install espeak-ng)"
    )
    text = render_banner(RunSettings.model_validate({}), with_chat=True, token="T", sample=sample)
    assert "NOTE: no sample recording was made (espeak-ng is not installed" in text
    assert "--wav YOUR-RECORDING.wav" in text


@pytest.mark.unit
def test_sample_call_is_speech_at_16khz_mono(tmp_path: Path) -> None:
    path = write_sample_call(tmp_path / "run" / "sample-call.wav")
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16_000, 1, 2)
        samples = array.array("h", wav.readframes(wav.getnframes()))
    lead = int(sample_audio.LEAD_SECONDS * 16_000)
    assert max(map(abs, samples[:lead])) == 0  # the agent greets first
    first_sentence = samples[lead : lead + 2 * 16_000]
    rms = (sum(x * x for x in first_sentence) / len(first_sentence)) ** 0.5
    assert rms > 500, rms  # spoken, not near-silence
    silences = sample_audio.LEAD_SECONDS + sample_audio.GAP_SECONDS + sample_audio.TAIL_SECONDS
    assert len(samples) / 16_000 > silences + 2  # two sentences of speech on top
    assert not list(path.parent.glob("*.partial"))


@pytest.mark.unit
def test_sample_call_without_espeak_is_a_note_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    sample = make_sample_call(tmp_path / "sample-call.wav")
    assert sample.path is None
    assert "espeak-ng is not installed" in sample.problem
    assert not (tmp_path / "sample-call.wav").exists()


# --- the real thing ---------------------------------------------------------------------------------


class DevRun:
    """`python -m devrun` as a user starts it, reading its output."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devrun"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self.groups: set[int] = set()

    def wait_ready(self, timeout: float = 240.0) -> str:
        """The output up to the banner's last line (the voice worker's start can take a minute)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith(LAST_LINE) and any(READY_LINE in seen for seen in self.output):
                return "".join(self.output)
        raise AssertionError("make run did not become ready:\n" + "".join(self.output))

    def children(self) -> dict[int, str]:
        """Command lines by pid of the runner's children (store, LiveKit, services, Envoy, worker, page).

        Each child leads its own process group; they are remembered to check that none outlives the run.
        """
        found = {pid: cmdline for pid, (ppid, _, cmdline) in _processes().items() if ppid == self.proc.pid}
        self.groups |= set(found)
        return found

    def leftovers(self) -> list[str]:
        """Live processes of the children's groups (their own children included) after the run."""
        return [cmd for _, (_, pgid, cmd) in _processes().items() if pgid in self.groups]

    def interrupt(self) -> str:
        """Ctrl-C, as in a terminal (the children have their own process groups: only the runner gets it)."""
        self.proc.send_signal(signal.SIGINT)
        rest, _ = self.proc.communicate(timeout=90)
        return rest


def _processes() -> dict[int, tuple[int, int, str]]:
    """(ppid, pgid, command line) of every live process by pid."""
    found: dict[int, tuple[int, int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), cmdline)
    return found


def _livekit_keys(children: dict[int, str]) -> LiveKitKeys:
    """The keys the running LiveKit server was given (its LIVEKIT_KEYS; make run never prints them)."""
    pid = next(pid for pid, cmd in children.items() if "livekit-server" in cmd)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    value = next(v for v in environ if v.startswith(b"LIVEKIT_KEYS=")).decode().split("=", 1)[1]
    key, secret = value.split(": ", 1)
    return LiveKitKeys(key, secret)


def _blocks(banner: str) -> dict[str, str]:
    """Copy-paste commands of the banner by their first word(s), continuation lines joined."""
    blocks: dict[str, str] = {}
    lines = banner.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("  ") and not line.startswith("   "):
            block = [line.strip()]
            while lines[i].endswith("\\") and i + 1 < len(lines):
                i += 1
                block.append(lines[i].strip())
            text = "\n".join(block)
            blocks.setdefault(_block_key(text), text)
        i += 1
    return blocks


def _block_key(text: str) -> str:
    first = text.split("\n", 1)[0]
    match = re.match(
        r"(export TOKEN|CID=|VOICE_CID=|SYNTERA_DEV_MODE=true|curl -N \S+|curl -sS -X POST \S+|curl -sS \S+"
        r"|\S*grpcurl -plaintext -H)",
        first,
    )
    return match.group(1) if match else first


def _bash(script: str, cwd: Path, *, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _free_livekit_port() -> int:
    """A free TCP port whose UDP media ports (+2, +3) are free too, as make run's port check wants."""
    for _ in range(50):
        port = free_port()
        if port + 3 > 65535:
            continue
        try:
            for udp in (port + 2, port + 3):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.bind(("127.0.0.1", udp))
        except OSError:
            continue
        return port
    raise AssertionError("no free port for the LiveKit server")


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    """make run's environment with every port moved off the defaults (7880 etc. may be in use)."""
    return _clean_env(
        RUN_DIR=str(tmp_path / "run"),
        MONGODB_PORT=str(free_port()),
        AGENT_SVC_PORT=str(free_port()),
        CHAT_SVC_PORT=str(free_port()),
        ENVOY_PORT=str(free_port()),
        ENVOY_ADMIN_PORT=str(free_port()),
        WEB_PORT=str(free_port()),
        LIVEKIT_PORT=str(_free_livekit_port()),
        VOICE_WORKER_HTTP_PORT=str(free_port()),
        AGENT_SVC_METRICS_PORT=str(free_port()),
        CHAT_SVC_METRICS_PORT=str(free_port()),
        VOICE_WORKER_METRICS_PORT=str(free_port()),
        LOG_LEVEL="WARNING",
    )


def _printed_call(blocks: dict[str, str], name: str) -> str:
    """The printed curl command whose URL ends with `name` (e.g. "/api/livekit/token")."""
    return next(v for k, v in blocks.items() if k.startswith("curl -sS") and k.endswith(name))


def _wait_for_the_agent(blocks: dict[str, str]) -> str:
    """Bash that polls the printed participants command until the dispatched agent has joined."""
    participants = _printed_call(blocks, "/api/livekit/room/$CID/participants")
    return "\n".join(
        [
            "for i in $(seq 120); do",
            f"  PARTICIPANTS=$({participants})",
            '  case "$PARTICIPANTS" in *PARTICIPANT_KIND_AGENT*) break;; esac',
            "  sleep 0.5",
            "done",
            'echo "$PARTICIPANTS"',
        ]
    )


@pytest.mark.mesh
@pytest.mark.slow
@pytest.mark.timeout(720)
def test_make_run_end_to_end(run_env: dict[str, str], tmp_path: Path) -> None:
    first = DevRun(run_env, tmp_path)
    try:
        banner = first.wait_ready()
        blocks = _blocks(banner)
        envoy = f"http://127.0.0.1:{run_env['ENVOY_PORT']}"
        livekit_url = f"ws://127.0.0.1:{run_env['LIVEKIT_PORT']}"
        assert envoy in banner
        assert 'Press "Voice call" and talk' in banner
        assert f"Open http://127.0.0.1:{run_env['WEB_PORT']}/ in a browser" in banner
        assert f"LiveKit server  {livekit_url}  (loopback only; log " in banner
        assert "voice worker    registered with LiveKit; offline providers" in banner
        children = first.children()
        commands = " | ".join(children.values())
        for expected in ("nx-27017", "livekit-server", "-m agent_svc", "-m chat_svc", "envoy"):
            assert expected in commands, commands
        assert "-m voice_worker start" in commands, commands
        keys = _livekit_keys(children)
        assert keys.api_key.startswith("syntera-")  # made for this run
        assert keys.api_secret not in "".join(first.output)
        run_dir = Path(run_env["RUN_DIR"])
        assert json.loads((run_dir / "livekit.json").read_text())["port"] == int(run_env["LIVEKIT_PORT"])
        # The printed commands, run as a user pastes them: a token, then a room the agent joins.
        script = "\n".join(
            [
                blocks["export TOKEN"],
                blocks["CID="],
                "echo $CID",
                _printed_call(blocks, "/api/livekit/token"),
                "echo",
                next(v for k, v in blocks.items() if k.endswith("grpcurl -plaintext -H")),
                _printed_call(blocks, "/api/livekit/room/create"),
                "echo",
                _wait_for_the_agent(blocks),
            ]
        )
        out = _bash(script, tmp_path).splitlines()
        conversation_id = out[0]
        over_rest = json.loads(out[1])
        created = json.loads(out[-2])
        participants = json.loads(out[-1])["participants"]
        over_grpc = json.loads("\n".join(out[2:-2]))
        verifier = api.TokenVerifier(keys.api_key, keys.api_secret)
        for reply in (over_rest, over_grpc):
            assert reply["url"] == livekit_url
            claims = verifier.verify(reply["token"])  # signed with the running server's keys
            assert claims.identity == "alice"
            assert claims.video is not None
            assert claims.video.room == f"conversation:{conversation_id}"
        assert created["roomName"] == f"conversation:{conversation_id}"
        # CreateRoom dispatched the agent: the worker make run started took the job and joined.
        assert [p["kind"] for p in participants] == ["PARTICIPANT_KIND_AGENT"], participants
        _try_the_printed_voice_call(blocks, run_env, tmp_path)
    finally:
        rest = first.interrupt()
    assert first.proc.returncode == 0, rest
    assert "stopped: voice_worker, envoy, chat_svc, agent_svc, livekit, store" in rest
    assert first.leftovers() == []

    # Outside dev mode (a JWT secret set) make run starts LiveKit and the worker just the same, and
    # the store keeps its data across restarts: the conversation is still there.
    secret = "a-configured-secret-of-at-least-32-characters"
    service_secret = "another-configured-secret-of-32-characters-or-more"
    second = DevRun(
        run_env | {"SYNTERA_JWT_SECRET": secret, "SYNTERA_SERVICE_JWT_SECRET": service_secret}, tmp_path
    )
    try:
        banner = second.wait_ready()
        assert "voice worker    registered with LiveKit" in banner
        commands = " | ".join(second.children().values())
        assert "livekit-server" in commands, commands
        assert "-m voice_worker start" in commands, commands
        token = _blocks(banner)["export TOKEN"]
        get = f'curl -sS -f {envoy}/v1/conversations/{conversation_id} -H "authorization: Bearer $TOKEN"'
        got = _bash(f"{token}\n{get}", tmp_path)
        assert json.loads(got)["conversation"]["conversationId"] == conversation_id
    finally:
        rest = second.interrupt()
    assert second.proc.returncode == 0, rest
    assert second.leftovers() == []


@pytest.mark.mesh
@pytest.mark.slow
@pytest.mark.timeout(360)
def test_make_run_with_livekit_url_uses_that_server_and_starts_none(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    keys = LiveKitKeys.generate()
    config = LiveKitServerConfig(keys=keys, port=_free_livekit_port())
    own = tmp_path / "own-livekit"
    server = start_server(config, own / "livekit.json", own / "livekit.log", base_env=os.environ)
    try:
        env = run_env | {
            "LIVEKIT_URL": config.ws_url,
            "LIVEKIT_API_KEY": keys.api_key,
            "LIVEKIT_API_SECRET": keys.api_secret,
        }
        devrun = DevRun(env, tmp_path)
        try:
            banner = devrun.wait_ready()
            assert f"LiveKit server  {config.ws_url}  (LIVEKIT_URL; make run started no server)" in banner
            assert "voice worker    registered with LiveKit; offline providers" in banner
            commands = " | ".join(devrun.children().values())
            assert "livekit-server" not in commands, commands
            assert "-m voice_worker start" in commands, commands
            assert keys.api_secret not in "".join(devrun.output)
            blocks = _blocks(banner)
            script = "\n".join(
                [blocks["export TOKEN"], blocks["CID="], _printed_call(blocks, "/api/livekit/token")]
            )
            reply = json.loads(_bash(script, tmp_path))
            assert reply["url"] == config.ws_url
            assert api.TokenVerifier(keys.api_key, keys.api_secret).verify(reply["token"]).identity == "alice"
        finally:
            rest = devrun.interrupt()
        assert devrun.proc.returncode == 0, rest
        assert "stopped: voice_worker, envoy, chat_svc, agent_svc, store" in rest
        assert devrun.leftovers() == []
        assert not (Path(run_env["RUN_DIR"]) / "livekit.json").exists()
        assert server.running()  # a server make run did not start is not its to stop
    finally:
        server.stop()


@pytest.mark.mesh
@pytest.mark.timeout(240)
def test_make_run_without_the_livekit_server_goes_on_loudly(run_env: dict[str, str], tmp_path: Path) -> None:
    """No Go at bootstrap: the mesh runs without LiveKit and the worker, and says what to install.

    Outside dev mode, to show agent_svc still gets a LiveKit configuration (it insists on one there).
    """
    missing = tmp_path / "no-go" / "livekit-server"
    env = run_env | {
        "LIVEKIT_SERVER_BIN": str(missing),
        "SYNTERA_JWT_SECRET": "a-configured-secret-of-at-least-32-characters",
        "SYNTERA_SERVICE_JWT_SECRET": "another-configured-secret-of-32-characters-or-more",
    }
    devrun = DevRun(env, tmp_path)
    try:
        banner = devrun.wait_ready()
        # Paths are shown relative to where make run was started.
        assert (
            "!! NO VOICE CALLS: the LiveKit server is not built (no-go/livekit-server is missing)." in banner
        )
        assert "Install Go 1.26 or newer" in banner
        assert banner.splitlines()[-1].startswith(LAST_LINE + "No voice calls")
        commands = " | ".join(devrun.children().values())
        assert "livekit-server" not in commands, commands
        assert "voice_worker" not in commands, commands
        for expected in ("-m agent_svc", "-m chat_svc", "envoy"):
            assert expected in commands, commands
        # Tokens still work (for the server make run would have started).
        blocks = _blocks(banner)
        script = "\n".join(
            [blocks["export TOKEN"], blocks["CID="], _printed_call(blocks, "/api/livekit/token")]
        )
        reply = json.loads(_bash(script, tmp_path))
        assert reply["url"] == f"ws://127.0.0.1:{run_env['LIVEKIT_PORT']}"
    finally:
        rest = devrun.interrupt()
    assert devrun.proc.returncode == 0, rest
    assert "stopped: envoy, chat_svc, agent_svc, store" in rest
    assert devrun.leftovers() == []


def _try_the_printed_voice_call(blocks: dict[str, str], env: dict[str, str], cwd: Path) -> None:
    """Pastes the banner's voice example (watch in the background, simulate, then read the messages)."""
    watch = next(v for k, v in blocks.items() if k.startswith("curl -N") and "$VOICE_CID:watch" in v)
    simulate = blocks["SYNTERA_DEV_MODE=true"]
    sample, reply = (cwd / _option(simulate, "--wav"), cwd / _option(simulate, "--out"))
    with wave.open(str(sample)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16_000, 1, 2)
    edge = watch.split()[2].split("/v1/", 1)[0]
    script = "\n".join(
        [
            blocks["export TOKEN"],
            blocks["VOICE_CID="],
            f"{watch} > watch.ndjson 2> watch.err &",
            "WATCHER=$!",
            # The watcher must be subscribed before the call starts, as when a user waits for it.
            "sleep 2",
            simulate,
            "sleep 2",
            "kill $WATCHER || true",
            "echo MESSAGES",
            f'curl -sS -f "{edge}/v1/conversations/$VOICE_CID/messages" -H "authorization: Bearer $TOKEN"',
        ]
    )
    out, listing = _bash(script, cwd, env=env, timeout=240).split("MESSAGES\n", 1)
    listed = json.loads(listing)
    transcript = [m for m in listed["messages"] if m["source"] == "MESSAGE_SOURCE_TRANSCRIPT"]
    # The greeting, then each of the two sentences with the agent's answer to it.
    assert [m["role"] for m in transcript] == ["ROLE_AGENT", *["ROLE_USER", "ROLE_AGENT"] * 2], transcript
    assert all(m["final"] for m in transcript)
    users = [m["text"].lower() for m in transcript if m["role"] == "ROLE_USER"]
    assert "internet" in users[0]
    assert "technician" in users[1]
    assert "transcripts delivered" in out
    # The watcher saw the call live: every stored turn came through the stream too.
    streamed = {
        json.loads(line)["message"]["segmentId"]
        for line in (cwd / "watch.ndjson").read_text().splitlines()
        if '"message"' in line
    }
    assert {m["segmentId"] for m in transcript} <= streamed
    assert reply.stat().st_size > 44  # more than a WAV header


def _option(command: str, name: str) -> str:
    """The value after `name` in a printed command (paths are relative to where make run started)."""
    match = re.search(rf"{name} (\S+)", command)
    assert match, command
    return match.group(1)


@pytest.mark.mesh
def test_make_run_refuses_a_taken_port(run_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", int(run_env["ENVOY_PORT"])))
        sock.listen()
        result = _devrun(env=run_env, cwd=tmp_path)
    assert result.returncode == 2
    assert "set ENVOY_PORT" in result.stderr


@pytest.mark.unit
@pytest.mark.parametrize(
    ("env", "embedded"),
    [
        ({}, True),
        ({"MONGODB_URI": "mongodb://127.0.0.1:27017"}, True),  # `.env` copied from `.env.example`
        ({"MONGODB_URI": "mongodb://localhost:28000/?x=1", "MONGODB_PORT": "28000"}, True),
        ({"MONGODB_URI": "mongodb://db.internal:27017"}, False),
        ({"MONGODB_URI": "mongodb://127.0.0.1:27018"}, False),
    ],
)
def test_make_run_starts_the_embedded_store_unless_told_otherwise(
    env: dict[str, str], embedded: bool
) -> None:
    assert RunSettings.model_validate(env).uses_embedded_store is embedded


@pytest.mark.unit
def test_envoy_config_command_renders_a_valid_config_from_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "edge.json"
    env = _clean_env(
        AGENT_SVC_ADDRESS="agent:50051",
        CHAT_SVC_ADDRESS="chat:50052",
        ENVOY_PORT="18080",
        CORS_ALLOWED_ORIGINS="https://app.example",
    )
    result = _devrun("envoy-config", "--out", str(out), "--listen-host", "0.0.0.0", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rendered = json.loads(out.read_text())
    listener = rendered["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "0.0.0.0", "port_value": 18080}
    clusters = {c["name"]: c for c in rendered["static_resources"]["clusters"]}
    endpoint = clusters["chat_svc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "chat", "port_value": 50052}
    validated = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr


@pytest.mark.unit
def test_envoy_config_command_names_a_bad_address(tmp_path: Path) -> None:
    env = _clean_env(AGENT_SVC_ADDRESS="no-port")
    result = _devrun("envoy-config", "--out", str(tmp_path / "e.json"), env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "no-port" in result.stderr


@pytest.mark.mesh
def test_make_run_explains_dev_mode_off_without_a_secret(run_env: dict[str, str], tmp_path: Path) -> None:
    result = _devrun(env={**run_env, "SYNTERA_DEV_MODE": "false"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "SYNTERA_JWT_SECRET is empty" in result.stderr


@pytest.mark.mesh
@pytest.mark.timeout(240)
def test_make_run_goes_on_loudly_when_the_voice_worker_cannot_start(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    devrun = DevRun(run_env | {"VOICE_WORKER_OFFLINE_TTS_MODEL": "nonsense"}, tmp_path)
    try:
        banner = devrun.wait_ready()
        assert "!! The voice worker is NOT running, so calls connect but no agent answers:" in banner
        assert "unknown offline tts model 'nonsense'" in banner
        assert banner.splitlines()[-1].startswith(LAST_LINE + "No agent answers calls")
        commands = " | ".join(devrun.children().values())
        assert "livekit-server" in commands, commands
        assert "voice_worker" not in commands, commands
    finally:
        rest = devrun.interrupt()
    assert devrun.proc.returncode == 0, rest
    assert "stopped: envoy, chat_svc, agent_svc, livekit, store" in rest
    assert devrun.leftovers() == []
