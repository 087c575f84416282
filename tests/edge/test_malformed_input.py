"""Every REST route, walked from the contracts' `google.api.http` rules, refuses undecodable input with
a 400 naming what was wrong — with a user's token and without one, never a 5xx, never internal text.

Undecodable: bytes that are not UTF-8 in a path variable, a query parameter or a JSON body; bad
percent-encoding; JSON the transcoder cannot parse. The routes are the ones the edge's transcoder
serves (its `services`, minus the internal methods it blocks), read from the same descriptor set,
so a route added to a contract is walked without touching this test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from devrun.envoy_config import DEFAULT_DESCRIPTOR, INTERNAL_METHODS, EdgeConfig, render_bootstrap
from tests.support.identity import user_token

pytestmark = pytest.mark.mesh

NOT_UTF8 = ("%FF", "%C3%28", "%E2%82")  # a stray byte, a bad continuation, a cut-off sequence
BAD_PERCENT = ("%ZZ", "abc%")
# What a response must never show a caller.
LEAKS = ("Traceback", "DecodeError", "Exception", "<class", "Error parsing", "UNKNOWN")


@dataclass(frozen=True)
class Route:
    method: str  # GET, POST, …
    template: str  # /v1/conversations/{conversation_id}/messages
    request: Descriptor
    body: str  # "", "*" or a field name

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"

    def path(self, value: str) -> str:
        return re.sub(r"\{[^}]+\}", value, self.template)

    @property
    def path_fields(self) -> set[str]:
        return {name.split("=")[0].split(".")[0] for name in re.findall(r"\{([^}]+)\}", self.template)}


def _served_services() -> list[str]:
    listener = render_bootstrap(EdgeConfig())["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (transcoder,) = [
        f["typed_config"]
        for f in hcm["http_filters"]
        if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    ]
    services: list[str] = transcoder["services"]
    return services


def _routes() -> list[Route]:
    files = descriptor_pb2.FileDescriptorSet.FromString(DEFAULT_DESCRIPTOR.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    routes = []
    for service_name in _served_services():
        service = pool.FindServiceByName(service_name)
        for method in service.methods:
            if f"/{service_name}/{method.name}" in INTERNAL_METHODS:
                continue
            options = descriptor_pb2.MethodOptions.FromString(method.GetOptions().SerializeToString())
            rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb is None or verb == "custom":
                continue
            routes.append(Route(verb.upper(), getattr(rule, verb), method.input_type, rule.body))
    assert len(routes) >= 15, [r.name for r in routes]
    return routes


ROUTES = _routes()


def _string_field(message: Descriptor, exclude: frozenset[str] = frozenset()) -> FieldDescriptor | None:
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated and field.name not in exclude:
            return field
    return None


def _raw_body(route: Route) -> bool:
    """The body is bytes for the handler (`google.api.HttpBody`, a signed webhook), not JSON."""
    if route.body in ("", "*"):
        return False
    target = route.request.fields_by_name[route.body].message_type
    return target is not None and target.full_name == "google.api.HttpBody"


def _bad_body(route: Route) -> bytes | None:
    """A JSON body with bytes that are not UTF-8 in a string field, or None for routes without one."""
    if not route.body or _raw_body(route):
        return None
    if route.body == "*":
        field = _string_field(route.request, frozenset(route.path_fields))
        return None if field is None else b'{"' + field.json_name.encode() + b'": "\xff\xfe"}'
    target = route.request.fields_by_name[route.body].message_type
    field = None if target is None else _string_field(target)
    return None if field is None else b'{"' + field.json_name.encode() + b'": "\xc3\x28"}'


def _cases(route: Route) -> list[tuple[str, str, bytes | None, bool]]:
    """(label, URL, body, must be 400 even without a token) for one route."""
    body = _bad_body(route) if route.body else None
    json_body = body if body is not None else (b"{}" if route.body else None)
    cases: list[tuple[str, str, bytes | None, bool]] = []
    if route.path_fields:
        cases += [(f"path {v}", route.path(v), json_body, True) for v in NOT_UTF8]
        # A valid string that no id matches: refused by the service, which checks the caller first.
        cases += [(f"path {v}", route.path(v), json_body, False) for v in BAD_PERCENT]
    plain = route.path("c1")
    # A parameter no request has, with a value that is not UTF-8 either: refused by the transcoder.
    cases.append(("unknown query", f"{plain}?unknown=%FF", json_body, True))
    if not route.body:
        field = _string_field(route.request, frozenset(route.path_fields))
        if field is not None:
            cases += [(f"query {v}", f"{plain}?{field.json_name}={v}", None, True) for v in NOT_UTF8]
    else:
        if body is not None:
            cases.append(("body not UTF-8", plain, body, True))
        if not _raw_body(route):
            cases.append(("body not JSON", plain, b'{"x": ', True))
    return cases


def _violations(body: dict[str, Any]) -> list[str]:
    return [
        v["field"]
        for d in body.get("details", [])
        if d["@type"].endswith("google.rpc.BadRequest")
        for v in d["fieldViolations"]
    ]


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
async def test_undecodable_input_is_400_naming_the_field_on_every_route(
    edge: httpx.AsyncClient, route: Route
) -> None:
    cases = _cases(route)
    assert cases, route.name
    for label, url, body, before_auth in cases:
        for token in (user_token("alice"), None):
            headers = {"content-type": "application/json"}
            if token:
                headers["authorization"] = f"Bearer {token}"
            reply = await edge.request(route.method, url, content=body, headers=headers)
            what = f"{route.name} {label} {'with' if token else 'without'} a token"
            assert not any(leak in reply.text for leak in LEAKS), f"{what}: {reply.text}"
            if reply.status_code == 401 and not token and not before_auth:
                continue
            assert reply.status_code == 400, f"{what}: {reply.status_code} {reply.text}"
            payload = reply.json()
            assert payload["code"] == 3, f"{what}: {payload}"
            assert _violations(payload), f"{what}: no field named: {payload}"
