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
import warnings
import wave
from pathlib import Path

import pytest
from jwt.warnings import InsecureKeyLengthWarning
from livekit import api

from devrun import sample_audio
from devrun.banner import render_banner
from devrun.envoy_config import envoy_binary
from devrun.ports import free_port
from devrun.run import PortTaken, check_ports, plan_ports
from devrun.sample_audio import SampleCall, make_sample_call, write_sample_call
from devrun.settings import RunSettings
from servicekit import auth
from servicekit.settings import DEV_JWT_SECRET
from voice_worker.settings import VoiceWorkerSettings

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "The Syntera mesh is running"


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
def test_dev_mode_unless_configured_otherwise() -> None:
    assert RunSettings.model_validate({}).effective_dev_mode is True
    assert RunSettings.model_validate({"SYNTERA_JWT_SECRET": "x" * 40}).effective_dev_mode is False
    assert RunSettings.model_validate({"SYNTERA_DEV_MODE": "false"}).effective_dev_mode is False


@pytest.mark.unit
def test_banner_says_loudly_when_livekit_is_not_configured() -> None:
    text = render_banner(RunSettings.model_validate({}), with_chat=True, token="TOKEN123")
    assert "export TOKEN=TOKEN123" in text
    assert "ws://localhost:7880" in text
    assert "LiveKit is NOT configured" in text
    assert "grpcurl -plaintext 127.0.0.1:50051 list" in text
    configured = RunSettings.model_validate(
        {"LIVEKIT_URL": "wss://lk.example", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"}
    )
    assert "LiveKit is NOT configured" not in render_banner(configured, with_chat=True, token="T")


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
    assert worker.jwt_secret == settings.effective_jwt_secret
    assert worker.default_mode == "offline"


@pytest.mark.unit
def test_banner_voice_call_outside_dev_mode_never_prints_the_secret() -> None:
    secret = "a-configured-secret-of-at-least-32-characters"
    settings = RunSettings.model_validate({"SYNTERA_JWT_SECRET": secret})
    text = render_banner(settings, with_chat=True, token="T", sample=SampleCall(Path("/s.wav")))
    assert secret not in text
    assert "SYNTERA_DEV_MODE=true" not in text
    assert "SYNTERA_JWT_SECRET from your environment" in text


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

    def wait_ready(self, timeout: float = 120.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("!!!") and any(READY_LINE in seen for seen in self.output):
                # The banner ends with the LiveKit notice in dev mode; read to its closing bar.
                if sum(seen.startswith("!!!") for seen in self.output) == 2:
                    return "".join(self.output)
        raise AssertionError("make run did not become ready:\n" + "".join(self.output))

    def children(self) -> dict[int, str]:
        """Command lines by pid of the runner's children (store, services, Envoy, the call page)."""
        found: dict[int, str] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.proc.pid:
                    found[int(stat.parent.name)] = (
                        (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    )
            except OSError:
                continue
        return found

    def interrupt(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        rest, _ = self.proc.communicate(timeout=60)
        return rest


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


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


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    return _clean_env(
        RUN_DIR=str(tmp_path / "run"),
        MONGODB_PORT=str(free_port()),
        AGENT_SVC_PORT=str(free_port()),
        CHAT_SVC_PORT=str(free_port()),
        ENVOY_PORT=str(free_port()),
        ENVOY_ADMIN_PORT=str(free_port()),
        WEB_PORT=str(free_port()),
        LOG_LEVEL="WARNING",
    )


@pytest.mark.mesh
@pytest.mark.slow
@pytest.mark.timeout(480)
def test_make_run_end_to_end(run_env: dict[str, str], tmp_path: Path) -> None:
    first = DevRun(run_env, tmp_path)
    try:
        banner = first.wait_ready()
        blocks = _blocks(banner)
        envoy = f"http://127.0.0.1:{run_env['ENVOY_PORT']}"
        assert envoy in banner
        assert "LiveKit is NOT configured" in banner
        token_call = next(v for k, v in blocks.items() if k == f"curl -sS -X POST {envoy}/api/livekit/token")
        grpcurl_call = next(v for k, v in blocks.items() if k.endswith("grpcurl -plaintext -H"))
        # The printed commands, run as a user pastes them.
        script = "\n".join(
            [blocks["export TOKEN"], blocks["CID="], "echo $CID", token_call, "echo", grpcurl_call]
        )
        out = _bash(script, tmp_path).splitlines()
        conversation_id = out[0]
        over_rest = json.loads(out[1])
        over_grpc = json.loads("\n".join(out[2:]))
        verifier = api.TokenVerifier("devkey", "secret")  # the LiveKit dev-server defaults
        for reply in (over_rest, over_grpc):
            with warnings.catch_warnings():
                # The dev server's well-known secret is short by design.
                warnings.simplefilter("ignore", InsecureKeyLengthWarning)
                claims = verifier.verify(reply["token"])
            assert claims.identity == "alice"
            assert claims.video is not None
            assert claims.video.room == f"conversation:{conversation_id}"
        children = first.children()
        commands = " | ".join(children.values())
        for expected in ("nx-27017", "-m agent_svc", "-m chat_svc", "envoy"):
            assert expected in commands, commands
        _try_the_printed_voice_call(blocks, run_env, tmp_path)
    finally:
        rest = first.interrupt()
    assert first.proc.returncode == 0, rest
    assert "stopped: envoy, chat_svc, agent_svc, store" in rest
    assert [pid for pid in children if _alive(pid)] == []

    # The store keeps its data across restarts: the conversation is still there.
    second = DevRun(run_env, tmp_path)
    try:
        banner = second.wait_ready()
        token = _blocks(banner)["export TOKEN"]
        get = f'curl -sS -f {envoy}/v1/conversations/{conversation_id} -H "authorization: Bearer $TOKEN"'
        got = _bash(f"{token}\n{get}", tmp_path)
        assert json.loads(got)["conversation"]["conversationId"] == conversation_id
        children = second.children()
    finally:
        second.interrupt()
    assert [pid for pid in children if _alive(pid)] == []


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
