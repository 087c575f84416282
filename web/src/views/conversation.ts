/** One conversation on screen: its header, the live transcript and the message box. */

import { byId, el, show } from "../dom.js";
import { Channel, type Conversation, ConversationStatus } from "../gen/syntera/conversation/v1/resources_pb.js";
import { channelLabel, roleLabel, statusLabel } from "../labels.js";
import { replyData, replyMarks, showSummary } from "../reply.js";
import type { TranscriptEntry } from "../transcript.js";
import type { WatchState } from "../watch.js";

export interface ConversationHandlers {
  /** Sends typed text; resolves true when it was accepted (the box is then emptied). */
  onSend(text: string): Promise<boolean>;
  /** "End" (text) or "Hang up" (calls). */
  onEnd(): void;
  /** "Retry" on a failed agent reply. */
  onRetryReply(messageId: string): Promise<void>;
}

const WATCH_TEXT: Record<WatchState, string> = {
  connecting: "Waiting for the live transcript…",
  live: "Live",
  retrying: "Transcript connection lost; resuming",
  ended: "The conversation has ended.",
  failed: "The live transcript stopped",
};

export class ConversationView {
  private readonly panel = byId("conversation");
  private readonly title = byId("conversation-title");
  private readonly channel = byId("conversation-channel");
  private readonly status = byId("conversation-status");
  private readonly endButton = byId<HTMLButtonElement>("end-conversation");
  private readonly hangUp = byId<HTMLButtonElement>("hang-up");
  private readonly watchStatus = byId("watch-status");
  private readonly transcript = byId<HTMLOListElement>("transcript");
  private readonly messageForm = byId<HTMLFormElement>("message-form");
  private readonly messageInput = byId<HTMLInputElement>("message-input");
  private readonly sendButton: HTMLButtonElement;

  constructor(private readonly handlers: ConversationHandlers) {
    this.sendButton = this.messageForm.querySelector("button")!;
    this.messageForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = this.messageInput.value;
      if (!text.trim()) {
        return;
      }
      this.sendButton.disabled = true;
      void handlers.onSend(text).then((sent) => {
        this.sendButton.disabled = false;
        if (sent) {
          this.messageInput.value = "";
        }
      });
    });
    this.hangUp.addEventListener("click", () => handlers.onEnd());
    this.endButton.addEventListener("click", () => handlers.onEnd());
  }

  /** Shows a freshly opened conversation with an empty transcript. */
  open(conversation: Conversation): void {
    this.transcript.replaceChildren();
    this.render(conversation);
    show(this.panel, true);
  }

  close(): void {
    show(this.panel, false);
    this.transcript.replaceChildren();
    delete this.panel.dataset.conversationId;
  }

  render(conversation: Conversation): void {
    this.panel.dataset.conversationId = conversation.conversationId;
    this.panel.dataset.status = statusLabel(conversation.status);
    this.title.textContent = conversation.title || `${channelLabel(conversation.channel)} conversation`;
    this.channel.textContent = channelLabel(conversation.channel);
    this.status.textContent = statusLabel(conversation.status);
    this.status.className = `tag status-${statusLabel(conversation.status)}`;
    const active = conversation.status === ConversationStatus.ACTIVE;
    const isCall = conversation.channel !== Channel.TEXT;
    show(this.endButton, active && !isCall);
    this.hangUp.disabled = !active;
    this.messageInput.disabled = !active;
    this.sendButton.disabled = !active;
    this.messageInput.placeholder = active ? "Type a message…" : "This conversation has ended.";
    showSummary(this.panel, conversation.summary);
  }

  /** Disables the end buttons while ending is in flight (enabled again if it failed). */
  setEnding(ending: boolean): void {
    this.hangUp.disabled = ending;
    this.endButton.disabled = ending;
  }

  setWatchState(state: WatchState, detail?: string): void {
    this.transcript.dataset.watch = state;
    this.watchStatus.textContent = detail ? `${WATCH_TEXT[state]} (${detail})` : WATCH_TEXT[state];
  }

  /** Inserts or updates one transcript line in place, keyed by `seq`, so a final turn replaces its interim. */
  renderEntry(entry: TranscriptEntry): void {
    const key = entry.seq.toString();
    let item = this.transcript.querySelector<HTMLLIElement>(`li[data-seq="${key}"]`);
    if (!item) {
      item = el("li");
      item.dataset.seq = key;
      const next = [...this.transcript.children].find(
        (child) => BigInt((child as HTMLElement).dataset.seq ?? "0") > entry.seq,
      );
      this.transcript.insertBefore(item, next ?? null);
    }
    const role = roleLabel(entry.role);
    item.dataset.role = role;
    item.dataset.final = String(entry.final);
    item.dataset.interrupted = String(entry.interrupted);
    item.dataset.revision = entry.revision.toString();
    item.className = `turn ${role}${entry.final ? "" : " interim"}${entry.interrupted ? " interrupted" : ""}`;
    const parts: HTMLElement[] = [el("span", "who", role === "agent" ? "Agent" : "You"), el("span", "text", entry.text)];
    if (!entry.final) {
      parts.push(el("span", "badge-small", "…"));
    }
    if (entry.interrupted) {
      parts.push(el("span", "badge-small interrupted-mark", "interrupted"));
    }
    if (entry.reply) {
      Object.assign(item.dataset, replyData(entry.reply));
      parts.push(...replyMarks(entry.reply, () => this.handlers.onRetryReply(entry.messageId)));
    }
    item.replaceChildren(...parts);
    item.scrollIntoView({ block: "nearest" });
  }
}
