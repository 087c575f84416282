/**
 * The agent's replies in text conversations, as the page shows them: a reply grows while it is being
 * generated (every revision arrives on the watch stream and replaces the line), then becomes final; a
 * failed one says why and offers "Retry", which generates it again in place (RetryReply). The reply's
 * generator is shown too, so a scripted responder is never mistaken for a language model.
 *
 * Also the call summary shown once a call has ended.
 */

import { GeneratorKind, SummaryKind } from "./gen/syntera/agent/v1/resources_pb.js";
import {
  type ConversationSummary,
  type Reply,
  ReplyState,
  SummaryState,
} from "./gen/syntera/conversation/v1/resources_pb.js";
import { el } from "./dom.js";

/** What a failure reason means to a person. */
const FAILURE_TEXT: Record<string, string> = {
  LLM_UNAVAILABLE: "the language model could not be reached",
  LLM_TIMEOUT: "the language model stopped answering",
  LLM_FAILED: "the language model refused the request",
  LLM_EMPTY_REPLY: "the language model answered nothing",
  AGENT_SVC_UNAVAILABLE: "the agent service could not be reached",
  AGENT_SVC_FAILED: "the agent service failed",
  REPLY_TIMEOUT: "the reply took too long",
  REPLY_ABANDONED: "the server generating it went away",
  SERVICE_STOPPING: "the server was stopping",
};

export function replyStateLabel(state: ReplyState): string {
  switch (state) {
    case ReplyState.GENERATING:
      return "generating";
    case ReplyState.COMPLETE:
      return "complete";
    case ReplyState.FAILED:
      return "failed";
    case ReplyState.CANCELLED:
      return "cancelled";
    default:
      return "";
  }
}

export function generatorLabel(kind: GeneratorKind, model: string): string {
  switch (kind) {
    case GeneratorKind.SCRIPTED_RESPONDER:
      return "scripted responder (not a language model)";
    case GeneratorKind.CLOUD_MODEL:
      return `LiveKit Inference: ${model}`;
    case GeneratorKind.OPENAI_COMPATIBLE_MODEL:
      return `model: ${model}`;
    default:
      return "";
  }
}

/**
 * The marks to add after a reply's text: its state and generator, and for a failed one the reason and
 * a Retry button (disabled once pressed, until the reply changes again).
 */
export function replyMarks(reply: Reply, onRetry: () => Promise<void>): HTMLElement[] {
  const marks: HTMLElement[] = [];
  if (reply.state === ReplyState.FAILED) {
    const reason = FAILURE_TEXT[reply.failureReason] ?? reply.failureReason.toLowerCase().replaceAll("_", " ");
    const failed = el("span", "badge-small reply-failed", `no reply: ${reason}`);
    failed.title = reply.failureReason;
    const retry = el("button", "link reply-retry", "Retry");
    retry.type = "button";
    retry.addEventListener("click", () => {
      retry.disabled = true;
      void onRetry().finally(() => {
        retry.disabled = false;
      });
    });
    marks.push(failed, retry);
  } else if (reply.state === ReplyState.CANCELLED) {
    marks.push(el("span", "badge-small reply-cancelled", "cancelled: you wrote again"));
  }
  const generator = reply.generator ? generatorLabel(reply.generator.kind, reply.generator.model) : "";
  if (generator) {
    marks.push(el("span", "muted small reply-generator", generator));
  }
  return marks;
}

/** Data attributes of a reply's line (for styling and tests). */
export function replyData(reply: Reply | undefined): Record<string, string> {
  if (!reply) {
    return {};
  }
  return {
    replyState: replyStateLabel(reply.state),
    failureReason: reply.failureReason,
    attempt: String(reply.attempt),
  };
}

/** The call summary as a short paragraph, or undefined while there is none to show. */
export function summaryText(summary: ConversationSummary | undefined): string | undefined {
  if (!summary) {
    return undefined;
  }
  switch (summary.state) {
    case SummaryState.PENDING:
      return "Summary: being written…";
    case SummaryState.FAILED:
      return `Summary unavailable (${FAILURE_TEXT[summary.failureReason] ?? summary.failureReason}).`;
    case SummaryState.READY:
      if (!summary.text) {
        return "Summary: nothing was said in this call.";
      }
      return summary.kind === SummaryKind.EXTRACT ? summary.text : `Summary: ${summary.text}`;
    default:
      return undefined;
  }
}

/** Shows (or hides) the summary paragraph under the conversation's header. */
export function showSummary(panel: HTMLElement, summary: ConversationSummary | undefined): void {
  const text = summaryText(summary);
  let paragraph = panel.querySelector<HTMLParagraphElement>("#conversation-summary");
  if (!text) {
    paragraph?.remove();
    return;
  }
  if (!paragraph) {
    paragraph = el("p", "muted conversation-summary");
    paragraph.id = "conversation-summary";
    panel.querySelector(".conversation-head")?.after(paragraph);
  }
  paragraph.textContent = text;
  paragraph.dataset.state = summary ? SummaryState[summary.state].toLowerCase() : "";
}
