/**
 * The page's two live streams, each resubscribing with the same backoff after any break:
 *
 * - `ConversationWatch` follows one conversation with WatchConversation, resuming with `after_seq`, so
 *   the transcript neither misses nor doubles a message across reconnects;
 * - `ConversationListWatch` follows WatchConversations, which has no resume point: after a break the
 *   page reloads the list to catch up on what it missed.
 */

import { Code } from "@connectrpc/connect";

import { type Api, describeError, errorCode, WATCH_TIMEOUT_MS } from "./api.js";
import { Backoff, sleep } from "./backoff.js";
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

function watchBackoff(): Backoff {
  return new Backoff({ initialMs: 500, maxMs: 10_000 });
}

export class ConversationWatch {
  private readonly abort = new AbortController();
  private readonly backoff = watchBackoff();

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
    while (!signal.aborted) {
      this.handlers.onState("connecting");
      let delay = 0;
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
          this.backoff.reset();
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
        if (FINAL_CODES.has(errorCode(error))) {
          this.handlers.onState("failed", describeError(error, this.api.baseUrl));
          return;
        }
        delay = this.backoff.next() ?? 0;
      }
      if (signal.aborted) {
        return;
      }
      // The stream ended (deadline, restart, network): resume after what we hold.
      this.handlers.onState("retrying", delay ? `retrying in ${Math.max(1, Math.round(delay / 1000))} s` : undefined);
      await sleep(delay, signal);
    }
  }
}

export interface ListWatchHandlers {
  /** Something changed, or the stream broke and events may have been missed: load the list again. */
  onChange(): void;
  /** The stream was refused for good (the sign-in is no longer accepted). */
  onRefused(error: unknown): void;
}

export class ConversationListWatch {
  private readonly abort = new AbortController();
  private readonly backoff = watchBackoff();

  constructor(
    private readonly api: Api,
    private readonly handlers: ListWatchHandlers,
  ) {}

  start(): void {
    void this.run();
  }

  stop(): void {
    this.abort.abort();
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      let delay = 0;
      try {
        for await (const event of this.api.conversations.watchConversations(
          {},
          { signal, timeoutMs: WATCH_TIMEOUT_MS },
        )) {
          this.backoff.reset();
          if (event.event.case === "conversationCreated" || event.event.case === "conversationEnded") {
            this.handlers.onChange();
          }
        }
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        if (FINAL_CODES.has(errorCode(error))) {
          this.handlers.onRefused(error);
          return;
        }
        delay = this.backoff.next() ?? 0;
      }
      await sleep(delay, signal);
      if (!signal.aborted) {
        this.handlers.onChange();
      }
    }
  }
}
