"""`python -m devrun` (= `make run`) runs the mesh; `python -m devrun token --user alice` prints a dev JWT.

Also `python -m devrun envoy-config --out FILE` renders the Envoy bootstrap from the environment
(`AGENT_SVC_ADDRESS`, `CHAT_SVC_ADDRESS`, `ENVOY_*`, `CORS_ALLOWED_ORIGINS`, `OTEL_EXPORTER_OTLP_ENDPOINT`)
for running Envoy elsewhere; with `--kubernetes` it renders deploy/k8s's edge (devrun/kubernetes.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from devrun.settings import RunSettings
from servicekit import ids


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devrun", description="Run the Syntera mesh locally.")
    commands = parser.add_subparsers(dest="command")
    token = commands.add_parser(
        "token", help="print a user JWT signed with SYNTERA_JWT_SECRET (or the dev one)"
    )
    token.add_argument("--user", required=True, help="user id (the JWT subject), e.g. alice")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    config = commands.add_parser("envoy-config", help="render the Envoy bootstrap from the environment")
    config.add_argument("--out", type=Path, required=True, help="file to write (must end in .json)")
    config.add_argument("--listen-host", default=None, help="listener address (default ENVOY_HOST)")
    config.add_argument(
        "--kubernetes",
        action="store_true",
        help="the Kubernetes deployment's edge (deploy/k8s); reads nothing from the environment",
    )
    config.add_argument("--origins", default=None, help="with --kubernetes: comma-separated CORS origins")
    return parser


def _token(user: str, ttl: int) -> int:
    if not ids.is_id(user):
        # The services take only such ids as a token's subject.
        print(f"error: --user {ids.ID_RULE}", file=sys.stderr)
        return 2
    settings = RunSettings()
    # The services refuse tokens valid for longer than SYNTERA_JWT_MAX_TTL_SECONDS.
    if not 0 < ttl <= settings.jwt_max_ttl_seconds:
        print(
            f"error: --ttl must be between 1 and {settings.jwt_max_ttl_seconds} seconds "
            "(SYNTERA_JWT_MAX_TTL_SECONDS)",
            file=sys.stderr,
        )
        return 2
    print(settings.user_token(user, ttl))
    return 0


def _envoy_config(out: Path, listen_host: str | None) -> int:
    from devrun.envoy_config import EdgeConfig, write_bootstrap

    settings = RunSettings()
    agent = os.environ.get("AGENT_SVC_ADDRESS", f"{settings.agent_host}:{settings.agent_port}")
    chat = os.environ.get("CHAT_SVC_ADDRESS", f"{settings.chat_host}:{settings.chat_port}")
    try:
        write_bootstrap(
            EdgeConfig(
                listen_host=listen_host or settings.envoy_host,
                listen_port=settings.envoy_port,
                admin_port=settings.envoy_admin_port,
                agent_address=agent,
                chat_address=chat,
                cors_allowed_origins=settings.origins,
                otlp_endpoint=settings.otlp_endpoint or None,
            ),
            out,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _kubernetes_envoy_config(out: Path, origins: str | None) -> int:
    from devrun.envoy_config import parse_origins, write_bootstrap
    from devrun.kubernetes import DEFAULT_ORIGINS, kubernetes_edge

    write_bootstrap(kubernetes_edge(parse_origins(origins) if origins else DEFAULT_ORIGINS), out)
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "token":
        return _token(args.user, args.ttl)
    if args.command == "envoy-config" and args.kubernetes:
        return _kubernetes_envoy_config(args.out, args.origins)
    if args.command == "envoy-config":
        return _envoy_config(args.out, args.listen_host)
    return _run()


def _run() -> int:
    from devrun.launch import ROOT
    from devrun.ports import port_open
    from devrun.readiness import port_free
    from devrun.run import run  # imports grpc; keep `token` fast
    from devrun.webpage import WebSettings, serve_for_run

    settings = RunSettings()
    # The browser needs an address it can reach: a wildcard listener is reached on loopback.
    edge_host = "127.0.0.1" if settings.envoy_host in ("0.0.0.0", "::", "") else settings.envoy_host  # noqa: S104
    edge_url = f"http://{edge_host}:{settings.envoy_port}"
    web = WebSettings()
    page_host = urlsplit(web.origin).hostname or "127.0.0.1"
    # The page is served unless building or binding it failed (then serve_for_run has said why):
    # a port free before and answering after is the page's.
    free_before = port_free(web.host, web.port)
    with serve_for_run(edge_url, settings.origins, ROOT / settings.run_dir / "logs" / "web.log"):
        served = free_before and port_open(page_host, web.port)
        return run(settings, page_url=web.origin + "/" if served else None)


if __name__ == "__main__":
    sys.exit(main())
