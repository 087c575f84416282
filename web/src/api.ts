/**
 * Typed clients for the mesh, over gRPC-web through Envoy, generated from the same protos as the services.
 *
 * Nothing here is module state: the clients and the edge's address travel together in the `Api` value.
 */

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { BadRequestSchema, ErrorInfoSchema, QuotaFailureSchema } from "./gen/google/rpc/error_details_pb.js";
import { AgentService } from "./gen/syntera/agent/v1/agent_service_pb.js";
import { ConversationService } from "./gen/syntera/conversation/v1/conversation_service_pb.js";
import { LiveKitService } from "./gen/syntera/livekit/v1/livekit_service_pb.js";

/** Deadline of every unary call: the page never waits forever on the network. */
export const UNARY_TIMEOUT_MS = 10_000;
/** Deadline of one watch stream; the page resumes (with `after_seq` where there is one) when it passes. */
export const WATCH_TIMEOUT_MS = 30 * 60_000;

export interface Api {
  /** The edge's address, for messages that must say which server could not be reached. */
  baseUrl: string;
  agents: Client<typeof AgentService>;
  conversations: Client<typeof ConversationService>;
  livekit: Client<typeof LiveKitService>;
}

/** Builds the clients; `bearer` is read on every call so sign-in and sign-out take effect at once. */
export function createApi(baseUrl: string, bearer: () => string | undefined): Api {
  const authorization: Interceptor = (next) => async (request) => {
    const token = bearer();
    if (token) {
      request.header.set("authorization", `Bearer ${token}`);
    }
    return next(request);
  };
  const transport = createGrpcWebTransport({
    baseUrl,
    interceptors: [authorization],
    defaultTimeoutMs: UNARY_TIMEOUT_MS,
  });
  return {
    baseUrl,
    agents: createClient(AgentService, transport),
    conversations: createClient(ConversationService, transport),
    livekit: createClient(LiveKitService, transport),
  };
}

/** A one-line, human-readable account of a failed call, with field violations when the server sent them. */
export function describeError(error: unknown, apiBaseUrl: string): string {
  const err = ConnectError.from(error);
  if (err.code === Code.Unavailable || err.code === Code.Unknown) {
    // A stopped edge, a CORS refusal and a network error look the same to a page: a failed fetch.
    if (/fetch|network|load failed/i.test(err.rawMessage)) {
      return (
        `Cannot reach the Syntera API at ${apiBaseUrl}: it is not running, or it does not allow ` +
        `this page's origin (${location.origin}) in CORS_ALLOWED_ORIGINS.`
      );
    }
  }
  const limits = err.findDetails(QuotaFailureSchema).flatMap((failure) => failure.violations);
  if (limits.length > 0) {
    // The deployment's call limits (agent_svc's quota guard): say which, and when a call can start again.
    const wait = limits.some((limit) => limit.quotaId === "QUOTA_MAX_CONCURRENT_AGENT_SESSIONS")
      ? "Try again when another call has ended."
      : "Calls can start again next month, or when an operator raises the limit.";
    return `No call can start now: ${limits.map((limit) => limit.description).join("; ")}. ${wait}`;
  }
  const parts = [`${Code[err.code]}: ${err.rawMessage}`];
  for (const badRequest of err.findDetails(BadRequestSchema)) {
    for (const violation of badRequest.fieldViolations) {
      parts.push(`${violation.field}: ${violation.description}`);
    }
  }
  const reason = errorReason(error);
  if (reason) {
    parts.push(`(${reason})`);
  }
  return parts.join(" — ");
}

/** The gRPC status code of a failed call (`Unknown` for anything that is not a Connect error). */
export function errorCode(error: unknown): Code {
  return ConnectError.from(error).code;
}

/** The `ErrorInfo.reason` the services attach (e.g. `NOT_CONVERSATION_OWNER`), or undefined. */
export function errorReason(error: unknown): string | undefined {
  return ConnectError.from(error).findDetails(ErrorInfoSchema)[0]?.reason || undefined;
}

/** True when the error means the credentials are missing, malformed or expired. */
export function isUnauthenticated(error: unknown): boolean {
  return errorCode(error) === Code.Unauthenticated;
}

/** 32 random hex digits (like the services' uuid4 hex ids), used for `request_id`. */
export function newRequestId(): string {
  // getRandomValues, unlike randomUUID, also works on plain-http origins that are not localhost.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
