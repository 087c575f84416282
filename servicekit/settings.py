"""Settings every service shares. Each service subclasses with its own env prefix."""

from __future__ import annotations

import ipaddress
import sys
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from servicekit.auth import TokenPolicy

# Only ever used in dev mode, and announced loudly when it is: they are public (this file).
DEV_JWT_SECRET = "syntera-dev-only-jwt-secret-do-not-use-in-production"  # noqa: S105 - dev mode only
DEV_SERVICE_JWT_SECRET = "syntera-dev-only-service-jwt-secret-do-not-use-in-production"  # noqa: S105
MIN_SECRET_CHARS = 32
# What a service logs at start-up in dev mode.
DEV_MODE_WARNING = (
    "DEV MODE: the JWT secrets are the public dev ones, so anyone can sign tokens for this mesh; "
    "listening on loopback only. Never run like this in production"
)

# Exit status of a service that refuses its configuration (as argparse uses 2 for bad arguments).
CONFIG_ERROR_EXIT = 2


class CommonSettings(BaseSettings):
    """Shared settings, read from the environment (and `.env`) once at start-up."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    dev_mode: bool = Field(default=False, validation_alias="SYNTERA_DEV_MODE")
    jwt_secret: SecretStr = Field(default=SecretStr(""), validation_alias="SYNTERA_JWT_SECRET")
    service_jwt_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias="SYNTERA_SERVICE_JWT_SECRET"
    )
    jwt_max_ttl_seconds: int = Field(
        default=86_400, ge=60, le=30 * 86_400, validation_alias="SYNTERA_JWT_MAX_TTL_SECONDS"
    )
    jwt_audience: str = Field(default="", validation_alias="SYNTERA_JWT_AUDIENCE")
    jwt_issuer: str = Field(default="", validation_alias="SYNTERA_JWT_ISSUER")
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    log_format: Literal["json", "console"] = Field(default="json", validation_alias="LOG_FORMAT")
    mongodb_uri: str = Field(default="mongodb://127.0.0.1:27017", validation_alias="MONGODB_URI", repr=False)
    mongodb_database: str = Field(default="syntera", validation_alias="MONGODB_DATABASE")
    shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, le=300, validation_alias="SHUTDOWN_GRACE_SECONDS"
    )
    # Traces go to this OTLP/gRPC collector (e.g. http://otel-collector:4317); empty: tracing off.
    otlp_endpoint: str = Field(default="", validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")

    @model_validator(mode="after")
    def _secrets_required_outside_dev(self) -> CommonSettings:
        self.jwt_secret = _secret("SYNTERA_JWT_SECRET", self.jwt_secret, DEV_JWT_SECRET, self.dev_mode)
        self.service_jwt_secret = _secret(
            "SYNTERA_SERVICE_JWT_SECRET", self.service_jwt_secret, DEV_SERVICE_JWT_SECRET, self.dev_mode
        )
        if self.jwt_secret.get_secret_value() == self.service_jwt_secret.get_secret_value():
            raise ValueError(
                "SYNTERA_SERVICE_JWT_SECRET must differ from SYNTERA_JWT_SECRET: whoever can sign user "
                "tokens must not be able to act as a service"
            )
        return self

    @model_validator(mode="after")
    def _dev_mode_binds_loopback_only(self) -> CommonSettings:
        if not self.dev_mode:
            return self
        # Every address a service listens on is a `*_HOST` setting; dev mode's secrets are public,
        # so nothing beyond this machine may reach it.
        for name, info in type(self).model_fields.items():
            alias = info.validation_alias
            value = getattr(self, name)
            if isinstance(alias, str) and alias.endswith("_HOST") and isinstance(value, str):
                if not is_loopback(value):
                    raise ValueError(
                        f"{alias}={value}: dev mode listens on loopback addresses only (its secrets are "
                        "public); set SYNTERA_DEV_MODE=false and real secrets to listen elsewhere"
                    )
        return self

    def token_policy(self) -> TokenPolicy:
        """The bearer tokens this service accepts (see `servicekit.auth.TokenPolicy`)."""
        return TokenPolicy(
            user_secret=self.jwt_secret.get_secret_value(),
            service_secret=self.service_jwt_secret.get_secret_value(),
            max_ttl_seconds=self.jwt_max_ttl_seconds,
            audience=self.jwt_audience,
            issuer=self.jwt_issuer,
        )


_Settings = TypeVar("_Settings", bound=CommonSettings)


def load_settings(settings_class: type[_Settings], service: str) -> _Settings:
    """The service's settings from the environment and `.env`; exits with status 2 naming each bad one.

    Called before logging is configured, so the reason goes to stderr as one plain line.
    """
    try:
        return settings_class()
    except ValidationError as err:
        sys.stderr.write(f"{service}: invalid configuration: {describe_errors(err)}\n")
        raise SystemExit(CONFIG_ERROR_EXIT) from None


def describe_errors(error: ValidationError) -> str:
    """A settings validation failure as one line, naming the variable of each error that has one."""
    described = []
    for each in error.errors():
        message = str(each.get("msg", "")).removeprefix("Value error, ")
        location = ".".join(str(part) for part in each.get("loc", ()))
        described.append(f"{location}: {message}" if location else message)
    return "; ".join(described)


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1); false for wildcards."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _secret(variable: str, given: SecretStr, dev_default: str, dev_mode: bool) -> SecretStr:
    """`given`, or in dev mode the public dev default; outside dev mode a long enough one is required."""
    value = given.get_secret_value()
    if not value:
        if not dev_mode:
            raise ValueError(f"{variable} must be set (or SYNTERA_DEV_MODE=true for local development)")
        return SecretStr(dev_default)
    if len(value) < MIN_SECRET_CHARS and not dev_mode:
        raise ValueError(f"{variable} must be at least {MIN_SECRET_CHARS} characters")
    return given
