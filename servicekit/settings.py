"""Settings every service shares. Each service subclasses with its own env prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Only ever used in dev mode, and announced loudly when it is.
DEV_JWT_SECRET = "syntera-dev-only-jwt-secret-do-not-use-in-production"  # noqa: S105 - dev mode only


class CommonSettings(BaseSettings):
    """Shared settings, read from the environment (and `.env`) once at start-up."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    dev_mode: bool = Field(default=False, validation_alias="SYNTERA_DEV_MODE")
    jwt_secret: str = Field(default="", validation_alias="SYNTERA_JWT_SECRET", repr=False)
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
    def _jwt_secret_required_outside_dev(self) -> CommonSettings:
        if not self.jwt_secret:
            if not self.dev_mode:
                raise ValueError(
                    "SYNTERA_JWT_SECRET must be set (or SYNTERA_DEV_MODE=true for local development)"
                )
            self.jwt_secret = DEV_JWT_SECRET
        elif len(self.jwt_secret) < 32 and not self.dev_mode:
            raise ValueError("SYNTERA_JWT_SECRET must be at least 32 characters")
        return self
