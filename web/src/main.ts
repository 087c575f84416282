/**
 * The call page: sign in with a user token, pick an agent, start or open a conversation, join its call,
 * follow the live transcript and type into it. Every request goes to Envoy over gRPC-web.
 */

import "./style.css";

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { LogLevel, setLogLevel } from "livekit-client";

import {
  type Api,
  createApi,
  describeError,
  isUnauthenticated,
  newRequestId,
  WATCH_TIMEOUT_MS,
} from "./api.js";
import { Call, type CallMediaKind, type CallState, type CallView, type JoinCredentials } from "./call.js";
import { loadConfig } from "./config.js";
import { byId, el, show } from "./dom.js";
import {
  Channel,
  type Conversation,
  ConversationStatus,
  type JoinInfo,
  type Message,
} from "./gen/syntera/conversation/v1/resources_pb.js";
import { CallMedia } from "./gen/syntera/livekit/v1/resources_pb.js";
import { channelLabel, parseChannel, roleLabel, statusLabel } from "./labels.js";
import { Session } from "./session.js";
import { Transcript, type TranscriptEntry } from "./transcript.js";
import { ConversationWatch, type WatchState } from "./watch.js";

const ui = {
  apiEndpoint: byId("api-endpoint"),
  signedInAs: byId("signed-in-as"),
  signOut: byId<HTMLButtonElement>("sign-out"),
  errorBanner: byId("error-banner"),
  signIn: byId("sign-in"),
  signInForm: byId<HTMLFormElement>("sign-in-form"),
  tokenInput: byId<HTMLTextAreaElement>("token-input"),
  home: byId("home"),
  createForm: byId<HTMLFormElement>("create-form"),
  agentSelect: byId<HTMLSelectElement>("agent-select"),
  titleInput: byId<HTMLInputElement>("title-input"),
  refreshConversations: byId<HTMLButtonElement>("refresh-conversations"),
  conversationList: byId<HTMLUListElement>("conversation-list"),
  conversation: byId("conversation"),
  conversationTitle: byId("conversation-title"),
  conversationChannel: byId("conversation-channel"),
  conversationStatus: byId("conversation-status"),
  endConversation: byId<HTMLButtonElement>("end-conversation"),
  call: byId("call"),
  livekitStatus: byId("livekit-status"),
  mute: byId<HTMLButtonElement>("mute"),
  camera: byId<HTMLButtonElement>("camera"),
  screenShare: byId<HTMLButtonElement>("screen-share"),
  reconnect: byId<HTMLButtonElement>("reconnect"),
  hangUp: byId<HTMLButtonElement>("hang-up"),
  callNotice: byId("call-notice"),
  participants: byId<HTMLUListElement>("participants"),
  media: byId("media"),
  watchStatus: byId("watch-status"),
  transcript: byId<HTMLOListElement>("transcript"),
  messageForm: byId<HTMLFormElement>("message-form"),
  messageInput: byId<HTMLInputElement>("message-input"),
};

/** The conversation on screen, with its live parts. */
interface OpenConversation {
  conversation: Conversation;
  transcript: Transcript;
  watch: ConversationWatch;
  call: Call | undefined;
}

let api: Api;
const session = new Session();
let current: OpenConversation | undefined;

function showError(message: string | undefined): void {
  ui.errorBanner.textContent = message ?? "";
  show(ui.errorBanner, !!message);
}

/** Reports a failed call; an unauthenticated one means the token is bad or expired, so sign in again. */
function reportFailure(action: string, error: unknown): void {
  if (isUnauthenticated(error)) {
    signOut();
    showError(`Your sign-in was refused or has expired (${action}). Paste a fresh token.`);
    return;
  }
  showError(`${action} failed: ${describeError(error)}`);
}

// ---- sign-in ---------------------------------------------------------------------------------------

function renderSignedIn(): void {
  const claims = session.claims;
  show(ui.signIn, !claims);
  show(ui.home, !!claims);
  show(ui.signOut, !!claims);
  show(ui.signedInAs, !!claims);
  ui.signedInAs.textContent = claims ? `signed in as ${claims.sub}` : "";
  document.body.dataset.signedIn = claims ? "true" : "false";
}

let listWatch: AbortController | undefined;

async function enterHome(): Promise<void> {
  renderSignedIn();
  await Promise.all([loadAgents(), loadConversations()]);
  watchConversationList();
}

/** Keeps the list current when conversations start or end elsewhere (another tab, the API, a hang-up). */
function watchConversationList(): void {
  listWatch?.abort();
  const abort = new AbortController();
  listWatch = abort;
  void (async () => {
    let failures = 0;
    while (!abort.signal.aborted) {
      try {
        for await (const event of api.conversations.watchConversations(
          {},
          { signal: abort.signal, timeoutMs: WATCH_TIMEOUT_MS },
        )) {
          failures = 0;
          if (event.event.case === "conversationCreated" || event.event.case === "conversationEnded") {
            void loadConversations();
          }
        }
      } catch (error) {
        if (abort.signal.aborted || isUnauthenticated(error)) {
          return;
        }
        failures += 1;
      }
      // Resubscribe (the stream has no resume point: reload the list to catch up on what was missed).
      await new Promise((resolve) => window.setTimeout(resolve, Math.min(10_000, 500 * 2 ** failures)));
      if (!abort.signal.aborted) {
        void loadConversations();
      }
    }
  })();
}

function signOut(): void {
  listWatch?.abort();
  listWatch = undefined;
  void closeConversation();
  session.signOut();
  ui.conversationList.replaceChildren();
  ui.agentSelect.replaceChildren();
  renderSignedIn();
}

ui.signInForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!session.signIn(ui.tokenInput.value)) {
    showError("That is not a token: paste the whole JWT printed by `python -m devrun token --user <name>`.");
    return;
  }
  ui.tokenInput.value = "";
  showError(undefined);
  void enterHome();
});

ui.signOut.addEventListener("click", () => signOut());

// ---- agents and conversations --------------------------------------------------------------------------

async function loadAgents(): Promise<void> {
  try {
    const response = await api.agents.listAgents({ pageSize: 100 });
    const options = response.agents.map((agent) => {
      const option = el("option", undefined, agent.displayName || agent.agentId);
      option.value = agent.agentId;
      return option;
    });
    ui.agentSelect.replaceChildren(...options);
    const builtIn = response.agents.find((agent) => agent.agentId === "default");
    if (builtIn) {
      ui.agentSelect.value = builtIn.agentId;
    }
    document.body.dataset.agentsLoaded = String(response.agents.length);
  } catch (error) {
    reportFailure("Loading agents", error);
  }
}

async function loadConversations(): Promise<void> {
  try {
    const response = await api.conversations.listConversations({ pageSize: 50 });
    ui.conversationList.replaceChildren(...response.conversations.map(conversationItem));
    document.body.dataset.conversationsLoaded = String(response.conversations.length);
  } catch (error) {
    reportFailure("Loading your conversations", error);
  }
}

function conversationItem(conversation: Conversation): HTMLLIElement {
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
  button.addEventListener("click", () => void openConversation(conversation, undefined));
  item.append(button);
  return item;
}

ui.refreshConversations.addEventListener("click", () => void loadConversations());

ui.createForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const submitter = (event as SubmitEvent).submitter as HTMLButtonElement | null;
  const channel = parseChannel(submitter?.dataset.channel);
  void createConversation(channel);
});

async function createConversation(channel: Channel): Promise<void> {
  showError(undefined);
  setFormBusy(ui.createForm, true);
  try {
    const response = await api.conversations.createConversation({
      agentId: ui.agentSelect.value,
      channel,
      title: ui.titleInput.value.trim(),
      requestId: newRequestId(),
    });
    ui.titleInput.value = "";
    if (response.conversation) {
      await openConversation(response.conversation, response.joinInfo);
    }
    await loadConversations();
  } catch (error) {
    reportFailure("Starting the conversation", error);
  } finally {
    setFormBusy(ui.createForm, false);
  }
}

function setFormBusy(form: HTMLFormElement, busy: boolean): void {
  for (const button of form.querySelectorAll("button")) {
    button.disabled = busy;
  }
}

// ---- one conversation ---------------------------------------------------------------------------------

async function closeConversation(): Promise<void> {
  const open = current;
  current = undefined;
  if (!open) {
    return;
  }
  open.watch.stop();
  await open.call?.hangUp();
  ui.media.replaceChildren();
}

async function openConversation(conversation: Conversation, joinInfo: JoinInfo | undefined): Promise<void> {
  await closeConversation();
  const transcript = new Transcript();
  const watch = new ConversationWatch(api, conversation.conversationId, () => transcript.lastSeq, {
    onMessage: (message) => applyMessage(message),
    onEnded: (ended) => void conversationEnded(ended),
    onState: (state, detail) => renderWatchState(state, detail),
  });
  const open: OpenConversation = { conversation, transcript, watch, call: undefined };
  current = open;
  ui.transcript.replaceChildren();
  renderConversation(conversation);
  show(ui.conversation, true);
  watch.start();

  const isCall = conversation.channel === Channel.VOICE || conversation.channel === Channel.VIDEO;
  show(ui.call, isCall);
  if (isCall && conversation.status === ConversationStatus.ACTIVE) {
    const media: CallMediaKind = conversation.channel === Channel.VIDEO ? "video" : "voice";
    open.call = new Call(callView, media, joinCredentials(joinInfo), () => refreshJoin(conversation, media));
    renderCallButtons(media);
    void open.call.connect();
  } else {
    callView.setState("disconnected");
    callView.setNotice(isCall ? "This call has ended." : undefined);
    callView.setControls({ connected: false, microphoneEnabled: false, cameraEnabled: false, screenSharing: false });
  }
}

function joinCredentials(joinInfo: JoinInfo | undefined): JoinCredentials | undefined {
  if (!joinInfo?.token || !joinInfo.url) {
    return undefined;
  }
  return {
    url: joinInfo.url,
    token: joinInfo.token,
    expireTime: joinInfo.expireTime ? timestampDate(joinInfo.expireTime) : undefined,
  };
}

/** A fresh LiveKit token for the conversation (expired token, or a call opened from the list). */
async function refreshJoin(conversation: Conversation, media: CallMediaKind): Promise<JoinCredentials> {
  const response = await api.livekit.generateToken({
    conversationId: conversation.conversationId,
    agentId: conversation.agentId,
    media: media === "video" ? CallMedia.VIDEO : CallMedia.VOICE,
  });
  return {
    url: response.url,
    token: response.token,
    expireTime: response.expireTime ? timestampDate(response.expireTime) : undefined,
  };
}

function renderConversation(conversation: Conversation): void {
  ui.conversation.dataset.conversationId = conversation.conversationId;
  ui.conversation.dataset.status = statusLabel(conversation.status);
  ui.conversationTitle.textContent = conversation.title || `${channelLabel(conversation.channel)} conversation`;
  ui.conversationChannel.textContent = channelLabel(conversation.channel);
  ui.conversationStatus.textContent = statusLabel(conversation.status);
  ui.conversationStatus.className = `tag status-${statusLabel(conversation.status)}`;
  const active = conversation.status === ConversationStatus.ACTIVE;
  const isCall = conversation.channel !== Channel.TEXT;
  show(ui.endConversation, active && !isCall);
  ui.hangUp.disabled = !active;
  ui.messageInput.disabled = !active;
  ui.messageForm.querySelector("button")!.disabled = !active;
  ui.messageInput.placeholder = active ? "Type a message…" : "This conversation has ended.";
}

function renderWatchState(state: WatchState, detail?: string): void {
  ui.transcript.dataset.watch = state;
  const text: Record<WatchState, string> = {
    connecting: "Waiting for the live transcript…",
    live: "Live",
    retrying: "Transcript connection lost; resuming",
    ended: "The conversation has ended.",
    failed: "The live transcript stopped",
  };
  ui.watchStatus.textContent = detail ? `${text[state]} (${detail})` : text[state];
}

function applyMessage(message: Message): void {
  const open = current;
  if (!open || message.conversationId !== open.conversation.conversationId) {
    return;
  }
  if (open.transcript.apply(message)) {
    const entry = open.transcript.get(message.seq);
    if (entry) {
      renderEntry(entry);
    }
  }
}

/** Inserts or updates one transcript line in place, keyed by `seq`, so a final turn replaces its interim. */
function renderEntry(entry: TranscriptEntry): void {
  const key = entry.seq.toString();
  let item = ui.transcript.querySelector<HTMLLIElement>(`li[data-seq="${key}"]`);
  if (!item) {
    item = el("li");
    item.dataset.seq = key;
    const next = [...ui.transcript.children].find(
      (child) => BigInt((child as HTMLElement).dataset.seq ?? "0") > entry.seq,
    );
    ui.transcript.insertBefore(item, next ?? null);
  }
  const role = roleLabel(entry.role);
  item.dataset.role = role;
  item.dataset.final = String(entry.final);
  item.dataset.interrupted = String(entry.interrupted);
  item.dataset.revision = entry.revision.toString();
  item.className = `turn ${role}${entry.final ? "" : " interim"}${entry.interrupted ? " interrupted" : ""}`;
  const parts: HTMLElement[] = [el("span", "who", role === "agent" ? "Agent" : "You")];
  const text = el("span", "text", entry.text);
  parts.push(text);
  if (!entry.final) {
    parts.push(el("span", "badge-small", "…"));
  }
  if (entry.interrupted) {
    parts.push(el("span", "badge-small interrupted-mark", "interrupted"));
  }
  item.replaceChildren(...parts);
  item.scrollIntoView({ block: "nearest" });
}

async function conversationEnded(ended: Conversation | undefined): Promise<void> {
  const open = current;
  if (!open) {
    return;
  }
  if (ended) {
    open.conversation = ended;
  } else {
    open.conversation.status = ConversationStatus.ENDED;
  }
  renderConversation(open.conversation);
  await open.call?.hangUp();
  callView.setNotice(open.conversation.channel === Channel.TEXT ? undefined : "This call has ended.");
  void loadConversations();
}

async function endCurrent(): Promise<void> {
  const open = current;
  if (!open) {
    return;
  }
  ui.hangUp.disabled = true;
  try {
    const response = await api.conversations.endConversation({
      conversationId: open.conversation.conversationId,
    });
    await conversationEnded(response.conversation);
  } catch (error) {
    ui.hangUp.disabled = false;
    reportFailure("Ending the conversation", error);
  }
}

ui.hangUp.addEventListener("click", () => void endCurrent());
ui.endConversation.addEventListener("click", () => void endCurrent());

ui.messageForm.addEventListener("submit", (event) => {
  event.preventDefault();
  void sendMessage();
});

async function sendMessage(): Promise<void> {
  const open = current;
  const text = ui.messageInput.value;
  if (!open || !text.trim()) {
    return;
  }
  const button = ui.messageForm.querySelector("button")!;
  button.disabled = true;
  try {
    const response = await api.conversations.sendMessage({
      conversationId: open.conversation.conversationId,
      text,
      requestId: newRequestId(),
    });
    ui.messageInput.value = "";
    // Shown at once; the same message arriving on the watch stream is then a no-op (same revision).
    if (response.message) {
      applyMessage(response.message);
    }
  } catch (error) {
    reportFailure("Sending the message", error);
  } finally {
    button.disabled = false;
  }
}

// ---- the call's view -----------------------------------------------------------------------------------

const callView: CallView = {
  setState(state: CallState) {
    ui.livekitStatus.dataset.state = state;
    ui.livekitStatus.textContent = state;
  },
  setNotice(text) {
    ui.callNotice.textContent = text ?? "";
    show(ui.callNotice, !!text);
  },
  setParticipants(participants) {
    if (participants.length === 0) {
      const item = el("li", "muted", "Not in the call.");
      item.dataset.placeholder = "true";
      ui.participants.replaceChildren(item);
      return;
    }
    ui.participants.replaceChildren(
      ...participants.map((p) => {
        const item = el("li", `participant ${p.kind}${p.speaking ? " speaking" : ""}`);
        item.dataset.identity = p.identity;
        item.dataset.kind = p.kind;
        const meter = el("span", "meter");
        const level = el("span", "level");
        level.style.width = `${Math.round(p.audioLevel * 100)}%`;
        meter.append(level);
        meter.title = `audio level ${Math.round(p.audioLevel * 100)}%`;
        item.append(
          el("span", "name", p.isLocal ? `${p.name} (you)` : p.name),
          el("span", "tag", p.kind),
          meter,
          el("span", "muted small", p.microphoneMuted ? "muted" : ""),
        );
        return item;
      }),
    );
  },
  setControls(controls) {
    ui.mute.disabled = !controls.connected;
    // "Unmute" only makes sense in a call; out of one the button is disabled and reads "Mute".
    ui.mute.textContent = controls.connected && !controls.microphoneEnabled ? "Unmute" : "Mute";
    ui.camera.disabled = !controls.connected;
    ui.camera.textContent = controls.cameraEnabled ? "Camera off" : "Camera on";
    ui.screenShare.disabled = !controls.connected;
    ui.screenShare.textContent = controls.screenSharing ? "Stop sharing" : "Share screen";
  },
  addMedia(key, element) {
    element.dataset.mediaKey = key;
    ui.media.append(element);
  },
  removeMedia(key) {
    for (const element of ui.media.querySelectorAll<HTMLElement>("[data-media-key]")) {
      if (element.dataset.mediaKey === key) {
        element.remove();
      }
    }
  },
  setRetryOffered(offered) {
    show(ui.reconnect, offered);
  },
};

function renderCallButtons(media: CallMediaKind): void {
  show(ui.camera, media === "video");
  show(ui.screenShare, media === "video");
}

ui.mute.addEventListener("click", () => void current?.call?.toggleMicrophone());
ui.camera.addEventListener("click", () => void current?.call?.toggleCamera());
ui.screenShare.addEventListener("click", () => void current?.call?.toggleScreenShare());
ui.reconnect.addEventListener("click", () => void current?.call?.connect());

// ---- start ---------------------------------------------------------------------------------------------

async function start(): Promise<void> {
  // livekit-client logs every signalling step at info; the page reports what matters itself.
  setLogLevel(LogLevel.warn);
  const config = await loadConfig();
  api = createApi(config.apiBaseUrl, () => session.bearer);
  ui.apiEndpoint.textContent = `API ${config.apiBaseUrl}`;
  callView.setParticipants([]);
  if (session.claims) {
    await enterHome();
  } else {
    renderSignedIn();
  }
  document.body.dataset.ready = "true";
}

void start();
