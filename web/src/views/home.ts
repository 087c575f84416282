/** The sidebar: the agent picker, the "new conversation" buttons and the list of the user's conversations. */

import { timestampDate } from "@bufbuild/protobuf/wkt";

import { byId, el } from "../dom.js";
import type { Agent } from "../gen/syntera/agent/v1/resources_pb.js";
import type { Channel, Conversation } from "../gen/syntera/conversation/v1/resources_pb.js";
import { channelLabel, parseChannel, statusLabel } from "../labels.js";

export interface HomeHandlers {
  onCreate(channel: Channel, agentId: string, title: string): void;
  onOpen(conversation: Conversation): void;
  onRefresh(): void;
}

export class HomeView {
  private readonly createForm = byId<HTMLFormElement>("create-form");
  private readonly agentSelect = byId<HTMLSelectElement>("agent-select");
  private readonly titleInput = byId<HTMLInputElement>("title-input");
  private readonly refreshButton = byId<HTMLButtonElement>("refresh-conversations");
  private readonly list = byId<HTMLUListElement>("conversation-list");
  /** Display names by agent id, for showing who a conversation is with. */
  private readonly agentNames = new Map<string, string>();

  constructor(private readonly handlers: HomeHandlers) {
    this.createForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const submitter = event.submitter as HTMLButtonElement | null;
      handlers.onCreate(parseChannel(submitter?.dataset.channel), this.agentSelect.value, this.titleInput.value.trim());
    });
    this.refreshButton.addEventListener("click", () => handlers.onRefresh());
  }

  setAgents(agents: Agent[]): void {
    this.agentNames.clear();
    const options = agents.map((agent) => {
      this.agentNames.set(agent.agentId, agent.displayName || agent.agentId);
      const option = el("option", undefined, agent.displayName || agent.agentId);
      option.value = agent.agentId;
      return option;
    });
    this.agentSelect.replaceChildren(...options);
    const builtIn = agents.find((agent) => agent.agentId === "default");
    if (builtIn) {
      this.agentSelect.value = builtIn.agentId;
    }
    document.body.dataset.agentsLoaded = String(agents.length);
  }

  /** The agent's display name, or its id when the list does not have it. */
  agentName(agentId: string): string {
    return this.agentNames.get(agentId) ?? agentId;
  }

  setConversations(conversations: Conversation[]): void {
    this.list.replaceChildren(...conversations.map((conversation) => this.item(conversation)));
    document.body.dataset.conversationsLoaded = String(conversations.length);
  }

  /** Disables the create buttons while a conversation is being started, so one click makes one. */
  setBusy(busy: boolean): void {
    for (const button of this.createForm.querySelectorAll("button")) {
      button.disabled = busy;
    }
  }

  /** Empties the form after a conversation was started from it. */
  clearTitle(): void {
    this.titleInput.value = "";
  }

  clear(): void {
    this.list.replaceChildren();
    this.agentSelect.replaceChildren();
    this.agentNames.clear();
  }

  private item(conversation: Conversation): HTMLLIElement {
    const item = el("li");
    item.dataset.conversationId = conversation.conversationId;
    item.dataset.status = statusLabel(conversation.status);
    const button = el("button", "link");
    button.type = "button";
    const created = conversation.createTime ? timestampDate(conversation.createTime).toLocaleString() : "";
    button.append(
      el("span", "title", conversation.title || `${channelLabel(conversation.channel)} conversation`),
      el("span", "tag", channelLabel(conversation.channel)),
      el("span", `tag status-${statusLabel(conversation.status)}`, statusLabel(conversation.status)),
      el("span", "muted small", created),
    );
    button.addEventListener("click", () => this.handlers.onOpen(conversation));
    item.append(button);
    return item;
  }
}
