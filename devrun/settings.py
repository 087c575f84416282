"""What `make run` reads from the environment (and `.env`): ports, addresses, dev mode, LiveKit."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from devrun.envoy_config import parse_origins
from servicekit import auth
from servicekit.settings import DEV_JWT_SECRET, is_loopback

# devrun.livekit_server.DEFAULT_PORT; not imported from there, which would load grpc for `devrun token`.
LIVEKIT_DEFAULT_PORT = 7880
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})


class RunSettings(BaseSettings):
    """Settings of the dev runner. Every port is overridable; the services read their own settings."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    dev_mode: bool | None = Field(default=None, validation_alias="SYNTERA_DEV_MODE")
    jwt_secret: SecretStr = Field(default=SecretStr(""), validation_alias="SYNTERA_JWT_SECRET")
    service_jwt_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias="SYNTERA_SERVICE_JWT_SECRET"
    )
    # The services refuse user tokens valid for longer, or without these `aud` / `iss` when set:
    # the tokens make run prints must pass.
    jwt_max_ttl_seconds: int = Field(
        default=86_400, ge=60, le=30 * 86_400, validation_alias="SYNTERA_JWT_MAX_TTL_SECONDS"
    )
    jwt_audience: str = Field(default="", validation_alias="SYNTERA_JWT_AUDIENCE")
    jwt_issuer: str = Field(default="", validation_alias="SYNTERA_JWT_ISSUER")
    run_dir: str = Field(default=".run", validation_alias="RUN_DIR")
    mongodb_port: int = Field(default=27017, ge=1, le=65535, validation_alias="MONGODB_PORT")
    mongodb_uri: str = Field(default="", validation_alias="MONGODB_URI", repr=False)
    agent_host: str = Field(default="127.0.0.1", validation_alias="AGENT_SVC_HOST")
    agent_port: int = Field(default=50051, ge=1, le=65535, validation_alias="AGENT_SVC_PORT")
    chat_host: str = Field(default="127.0.0.1", validation_alias="CHAT_SVC_HOST")
    chat_port: int = Field(default=50052, ge=1, le=65535, validation_alias="CHAT_SVC_PORT")
    envoy_host: str = Field(default="127.0.0.1", validation_alias="ENVOY_HOST")
    envoy_port: int = Field(default=8080, ge=1, le=65535, validation_alias="ENVOY_PORT")
    envoy_admin_port: int = Field(default=9901, ge=1, le=65535, validation_alias="ENVOY_ADMIN_PORT")
    cors_allowed_origins: str = Field(
        default="http://localhost:3000,http://127.0.0.1:3000,http://localhost:5173,http://127.0.0.1:5173",
        validation_alias="CORS_ALLOWED_ORIGINS",
    )
    livekit_url: str = Field(default="", validation_alias="LIVEKIT_URL")
    livekit_api_key: str = Field(default="", validation_alias="LIVEKIT_API_KEY", repr=False)
    livekit_api_secret: SecretStr = Field(default=SecretStr(""), validation_alias="LIVEKIT_API_SECRET")
    # The local server's UDP media ports follow its HTTP port (+2, +3), so all three must fit.
    livekit_port: int = Field(default=LIVEKIT_DEFAULT_PORT, ge=1, le=65532, validation_alias="LIVEKIT_PORT")
    livekit_server_bin: str = Field(default="", validation_alias="LIVEKIT_SERVER_BIN")
    # The voice worker's own health endpoint: make run checks the port is free before starting it.
    worker_http_host: str = Field(default="127.0.0.1", validation_alias="VOICE_WORKER_HTTP_HOST")
    worker_http_port: int = Field(default=8081, ge=0, le=65535, validation_alias="VOICE_WORKER_HTTP_PORT")
    # Each process's Prometheus endpoint (make run checks the ports are free and prints them).
    agent_metrics_port: int = Field(default=9471, ge=1, le=65535, validation_alias="AGENT_SVC_METRICS_PORT")
    chat_metrics_port: int = Field(default=9472, ge=1, le=65535, validation_alias="CHAT_SVC_METRICS_PORT")
    worker_metrics_port: int = Field(
        default=9473, ge=1, le=65535, validation_alias="VOICE_WORKER_METRICS_PORT"
    )
    # Given to the services and Envoy: with it set, every process exports its spans there.
    otlp_endpoint: str = Field(default="", validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")

    @property
    def effective_dev_mode(self) -> bool:
        """Dev mode unless it was switched off, or a JWT secret was configured and dev mode left unset."""
        if self.dev_mode is not None:
            return self.dev_mode
        return not self.jwt_secret.get_secret_value()

    @property
    def effective_jwt_secret(self) -> str:
        return self.jwt_secret.get_secret_value() or DEV_JWT_SECRET

    def user_token(self, user: str, ttl_seconds: int) -> str:
        """A user token the services accept: their secret, and `aud` / `iss` when configured."""
        return auth.mint(
            self.effective_jwt_secret,
            user,
            ttl_seconds=ttl_seconds,
            audience=self.jwt_audience,
            issuer=self.jwt_issuer,
        )

    def public_hosts(self) -> list[str]:
        """`VARIABLE=host` for each address make run would listen on beyond this machine."""
        hosts = {
            "ENVOY_HOST": self.envoy_host,
            "AGENT_SVC_HOST": self.agent_host,
            "CHAT_SVC_HOST": self.chat_host,
            "VOICE_WORKER_HTTP_HOST": self.worker_http_host,
        }
        return [f"{name}={host}" for name, host in hosts.items() if not is_loopback(host)]

    @property
    def livekit_external(self) -> bool:
        """True when LIVEKIT_URL names a server to use: then make run starts none of its own."""
        return bool(self.livekit_url)

    @property
    def livekit_server_path(self) -> Path:
        """Where the local LiveKit server binary is expected (bootstrap builds it there by default)."""
        from devrun.livekit_server import BINARY_NAME, TOOLS_BIN  # grpc comes with it: only when asked

        return (
            Path(self.livekit_server_bin).expanduser() if self.livekit_server_bin else TOOLS_BIN / BINARY_NAME
        )

    @property
    def uses_embedded_store(self) -> bool:
        """True unless MONGODB_URI points somewhere other than the embedded store's own address.

        A `.env` copied from `.env.example` names `mongodb://127.0.0.1:27017`, which is where the
        embedded store listens: that still means "start it".
        """
        if not self.mongodb_uri:
            return True
        try:
            parsed = urlsplit(self.mongodb_uri)
            port = parsed.port
        except ValueError:
            return False
        return parsed.hostname in _LOCAL_HOSTS and (port or 27017) == self.mongodb_port

    @property
    def origins(self) -> tuple[str, ...]:
        return parse_origins(self.cors_allowed_origins)
