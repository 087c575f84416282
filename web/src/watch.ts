/**
 * Follows one conversation with WatchConversation, resuming with `after_seq` after any break, so the
 * transcript neither misses nor doubles a message across reconnects.
 */

import { Code, ConnectError } from "@connectrpc/connect";

import { type Api, describeError, WATCH_TIMEOUT_MS } from "./api.js";
import type { Conversation, Message } from "./gen/syntera/conversation/v1/resources_pb.js";

export type WatchState = "connecting" | "live" | "retrying" | "ended" | "failed";

export interface WatchHandlers {
  onMessage(message: Message): void;
  onEnded(conversation: Conversation | undefined): void;
  onState(state: WatchState, detail?: string): void;
}

/** Errors that another attempt would only repeat. */
const FINAL_CODES = new Set([
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.NotFound,
  Code.InvalidArgument,
  Code.FailedPrecondition,
]);
const MAX_BACKOFF_MS = 10_000;

export class ConversationWatch {
  private readonly abort = new AbortController();

  constructor(
    private readonly api: Api,
    private readonly conversationId: string,
    /** The highest `seq` the page holds, read at every (re)subscription. */
    private readonly resumeFrom: () => bigint,
    private readonly handlers: WatchHandlers,
  ) {}

  start(): void {
    void this.run();
  }

  stop(): void {
    this.abort.abort();
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    let failures = 0;
    while (!signal.aborted) {
      this.handlers.onState("connecting");
      try {
        const stream = this.api.conversations.watchConversation(
          { conversationId: this.conversationId, afterSeq: this.resumeFrom() },
          {
            signal,
            timeoutMs: WATCH_TIMEOUT_MS,
            // Response headers mean Envoy and chat_svc accepted the stream: it is live from here on.
            onHeader: () => this.handlers.onState("live"),
          },
        );
        for await (const response of stream) {
          failures = 0;
          this.handlers.onState("live");
          const event = response.event;
          if (event.case === "message") {
            this.handlers.onMessage(event.value);
          } else if (event.case === "conversationEnded") {
            this.handlers.onState("ended");
            this.handlers.onEnded(event.value.conversation);
            return;
          }
          // keepAlive: the first one says the replay is done; later ones keep proxies from closing the stream.
        }
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        const code = ConnectError.from(error).code;
        if (FINAL_CODES.has(code)) {
          this.handlers.onState("failed", describeError(error));
          return;
        }
        failures += 1;
      }
      if (signal.aborted) {
        return;
      }
      // The stream ended without an end event (deadline, restart, network): resume after what we hold.
      const delay = failures === 0 ? 0 : Math.min(MAX_BACKOFF_MS, 250 * 2 ** failures);
      this.handlers.onState("retrying", delay ? `retrying in ${Math.round(delay / 1000)} s` : undefined);
      await sleep(delay, signal);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = window.setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        window.clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}
