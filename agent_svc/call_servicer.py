"""gRPC adapter for `syntera.livekit.v1.CallService`: validate → domain → map back."""

from __future__ import annotations

from typing import Any

import grpc

from agent_svc.quota import QuotaGuard
from agent_svc.webhooks import WebhookIntake
from servicekit import context
from syntera.livekit.v1 import call_service_pb2 as pb
from syntera.livekit.v1 import call_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

# Verified by the handler from the LiveKit signature, not by a bearer token (see WebhookIntake).
RECEIVE_WEBHOOK_METHOD = f"/{pb.DESCRIPTOR.services_by_name['CallService'].full_name}/ReceiveWebhook"


class CallServicer(pb_grpc.CallServiceServicer):
    """Serves CallService from the webhook intake and the quota guard."""

    def __init__(self, webhooks: WebhookIntake, guard: QuotaGuard) -> None:
        self._webhooks = webhooks
        self._guard = guard

    async def ReceiveWebhook(
        self, request: pb.ReceiveWebhookRequest, ctx: Context
    ) -> pb.ReceiveWebhookResponse:
        authorization = ""
        for key, value in ctx.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value
        receipt = await self._webhooks.receive(request.body.data, authorization)
        return pb.ReceiveWebhookResponse(
            event_id=receipt.event_id, event=receipt.event, duplicate=receipt.duplicate
        )

    async def GetUsage(self, request: pb.GetUsageRequest, _: Context) -> pb.GetUsageResponse:
        report = await self._guard.usage(context.current_principal(), request.user_id, request.month)
        response = pb.GetUsageResponse(
            month=report.month,
            user_id=report.user_id,
            agent_minutes=report.agent_minutes,
            participant_minutes=report.participant_minutes,
            live_calls=report.live_calls,
        )
        for state in report.quotas:
            quota = response.quotas.add(
                quota_id=state.quota_id,
                limit=state.limit,
                near_limit=state.near_limit,
                exhausted=state.exhausted,
            )
            if report.show_used:
                quota.used = state.used
        return response
