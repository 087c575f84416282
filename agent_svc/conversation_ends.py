"""Follows chat_svc's WatchConversationEnds for the conversation cache, reopening it when it drops.

While the stream is open the cache may answer; the moment it fails, ends, or goes silent for longer
than chat_svc's keep-alives allow, the cache is told `dropped` and every token asks chat_svc again
until a new stream has said `opened`.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import structlog

from agent_svc.conversation_cache import CachedConversationAccess
from servicekit.backoff import Backoff
from servicekit.client import ServiceCredentials
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc

log = structlog.get_logger("agent_svc.conversation_ends")

# Each stream is reopened after this long at the latest, so it has a deadline like every call
# (the cache starts empty on the new stream; a cost of one GetConversation per conversation).
STREAM_DEADLINE_SECONDS = 3600.0
# chat_svc sends a keep-alive after WATCH_KEEPALIVE_SECONDS (15 s by default) of silence: a stream
# quiet for longer than this is treated as lost.
SILENCE_LIMIT_SECONDS = 45.0
_RETRY_MIN_SECONDS = 0.2
_RETRY_MAX_SECONDS = 5.0


async def follow_ends(
    channel: grpc.aio.Channel,
    credentials: ServiceCredentials,
    cache: CachedConversationAccess,
    stop: asyncio.Event,
) -> None:
    """Keeps a WatchConversationEnds stream open and feeds it to `cache` until `stop` is set."""
    stub = conv_grpc.ConversationServiceStub(channel)
    backoff = Backoff(_RETRY_MIN_SECONDS, _RETRY_MAX_SECONDS)
    while not stop.is_set():
        call = stub.WatchConversationEnds(
            conv_pb.WatchConversationEndsRequest(),
            metadata=credentials.metadata(time.time()),
            timeout=STREAM_DEADLINE_SECONDS,
        )
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                read = asyncio.ensure_future(call.read())
                done, _ = await asyncio.wait(
                    {read, stopping}, timeout=SILENCE_LIMIT_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if read not in done:
                    read.cancel()
                    if not stopping.done():
                        log.warning("conversation ends stream went silent; reopening")
                    break
                event = read.result()
                if not isinstance(event, conv_pb.WatchConversationEndsResponse):
                    log.warning("conversation ends stream closed by chat_svc; reopening")
                    break  # grpc.aio.EOF
                kind = event.WhichOneof("event")
                if kind == "conversation_ended":
                    cache.ended(event.conversation_ended)
                elif kind == "opened":
                    cache.opened()
                    backoff.reset()
                    log.info("conversation ends followed; cache on")
                elif kind == "reset":
                    cache.reset()
        except grpc.aio.AioRpcError as err:
            if not stop.is_set():
                log.warning("conversation ends stream failed; cache off until back", code=err.code().name)
        finally:
            # Off before anything else can run: no answer from the cache without a live stream.
            cache.dropped()
            call.cancel()
            stopping.cancel()
        if not stop.is_set():
            await backoff.wait(stop)
