/**
 * The page's controller: signs in, loads agents and conversations, opens one conversation at a time with
 * its transcript watch and, for calls, its LiveKit call. The views own the DOM; this owns the state.
 */

import { Code } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { type Api, describeError, errorCode, isUnauthenticated, newRequestId } from "./api.js";
import { Call, type CallMediaKind, CallTokenError, type JoinCredentials } from "./call.js";
import {
  Channel,
  type Conversation,
  ConversationStatus,
  type JoinInfo,
  type Message,
  SummaryState,
} from "./gen/syntera/conversation/v1/resources_pb.js";
import { CallMedia } from "./gen/syntera/livekit/v1/resources_pb.js";
import type { Session } from "./session.js";
import { Transcript } from "./transcript.js";
import { ErrorBanner } from "./views/banner.js";
import { CallPanel } from "./views/call-panel.js";
import { ConversationView } from "./views/conversation.js";
import { HomeView } from "./views/home.js";
import { SignInView } from "./views/sign-in.js";
import { ConversationListWatch, ConversationWatch } from "./watch.js";

/** The URL parameter naming the open conversation, so a reload or a shared link opens it again. */
const CONVERSATION_PARAM = "conversation";

/** The conversation on screen, with its live parts. */
interface OpenConversation {
  conversation: Conversation;
  transcript: Transcript;
  watch: ConversationWatch;
  call: Call | undefined;
}

export class App {
  private readonly banner = new ErrorBanner();
  private readonly signIn: SignInView;
  private readonly home: HomeView;
  private readonly conversationView: ConversationView;
  private readonly callPanel: CallPanel;
  private listWatch: ConversationListWatch | undefined;
  private current: OpenConversation | undefined;

  constructor(
    private readonly api: Api,
    private readonly session: Session,
  ) {
    this.signIn = new SignInView({
      onSignIn: (pasted) => this.onSignIn(pasted),
      onSignOut: () => this.signOut(),
    });
    this.home = new HomeView({
      onCreate: (channel, agentId, title) => void this.createConversation(channel, agentId, title),
      onOpen: (conversation) => void this.openConversation(conversation, undefined),
      onRefresh: () => void this.loadConversations(),
    });
    this.conversationView = new ConversationView({
      onSend: (text) => this.sendMessage(text),
      onEnd: () => void this.endCurrent(),
      onRetryReply: (messageId) => this.retryReply(messageId),
    });
    this.callPanel = new CallPanel(() => this.current?.call);
  }

  async start(): Promise<void> {
    if (!this.session.claims) {
      this.signIn.render(undefined);
      return;
    }
    await this.enterHome();
    const linked = new URL(location.href).searchParams.get(CONVERSATION_PARAM);
    if (linked) {
      await this.openById(linked);
    }
  }

  // ---- sign-in ------------------------------------------------------------------------------------------

  private onSignIn(pasted: string): boolean {
    if (!this.session.signIn(pasted)) {
      this.banner.show("That is not a token: paste the whole JWT printed by `python -m devrun token --user <name>`.");
      return false;
    }
    this.banner.clear();
    void this.enterHome();
    return true;
  }

  private async enterHome(): Promise<void> {
    this.signIn.render(this.session.claims);
    await Promise.all([this.loadAgents(), this.loadConversations()]);
    this.listWatch?.stop();
    // Keeps the list current when conversations start or end elsewhere (another tab, the API, a hang-up).
    this.listWatch = new ConversationListWatch(this.api, {
      onChange: () => void this.loadConversations(),
      onRefused: (error) => this.reportFailure("Following your conversations", error),
    });
    this.listWatch.start();
  }

  private signOut(): void {
    this.listWatch?.stop();
    this.listWatch = undefined;
    void this.closeConversation();
    this.session.signOut();
    this.home.clear();
    this.signIn.render(undefined);
  }

  /** Reports a failed call; an unauthenticated one means the token is bad or expired, so sign in again. */
  private reportFailure(action: string, error: unknown): void {
    if (isUnauthenticated(error)) {
      this.signOut();
      this.banner.show(`Your sign-in was refused or has expired (${action}). Paste a fresh token.`);
      return;
    }
    this.banner.show(`${action} failed: ${describeError(error, this.api.baseUrl)}`);
  }

  // ---- agents and conversations ---------------------------------------------------------------------------

  private async loadAgents(): Promise<void> {
    try {
      const response = await this.api.agents.listAgents({ pageSize: 100 });
      this.home.setAgents(response.agents);
    } catch (error) {
      this.reportFailure("Loading agents", error);
    }
  }

  private async loadConversations(): Promise<void> {
    try {
      const response = await this.api.conversations.listConversations({ pageSize: 50 });
      this.home.setConversations(response.conversations);
    } catch (error) {
      this.reportFailure("Loading your conversations", error);
    }
  }

  private async createConversation(channel: Channel, agentId: string, title: string): Promise<void> {
    this.banner.clear();
    this.home.setBusy(true);
    try {
      const response = await this.api.conversations.createConversation({
        agentId,
        channel,
        title,
        requestId: newRequestId(),
      });
      this.home.clearTitle();
      if (response.conversation) {
        await this.openConversation(response.conversation, response.joinInfo);
      }
      await this.loadConversations();
    } catch (error) {
      this.reportFailure("Starting the conversation", error);
    } finally {
      this.home.setBusy(false);
    }
  }

  /** Opens a conversation named in the address (a reload, a shared link); says so when it cannot. */
  private async openById(conversationId: string): Promise<void> {
    try {
      const response = await this.api.conversations.getConversation({ conversationId });
      if (response.conversation) {
        await this.openConversation(response.conversation, undefined);
      }
    } catch (error) {
      setLinkedConversation(undefined);
      switch (errorCode(error)) {
        case Code.NotFound:
        case Code.InvalidArgument:
          this.banner.show(`Conversation ${conversationId} was not found: it does not exist, or no longer does.`);
          return;
        case Code.PermissionDenied:
          this.banner.show(`You may not open conversation ${conversationId}: it belongs to another user.`);
          return;
        default:
          this.reportFailure("Opening the conversation", error);
      }
    }
  }

  // ---- one conversation -------------------------------------------------------------------------------

  private async closeConversation(): Promise<void> {
    const open = this.current;
    this.current = undefined;
    if (!open) {
      return;
    }
    setLinkedConversation(undefined);
    open.watch.stop();
    await open.call?.hangUp();
    this.callPanel.clearMedia();
    this.conversationView.close();
  }

  private async openConversation(conversation: Conversation, joinInfo: JoinInfo | undefined): Promise<void> {
    await this.closeConversation();
    const transcript = new Transcript();
    const watch = new ConversationWatch(this.api, conversation.conversationId, () => transcript.lastSeq, {
      onMessage: (message) => this.applyMessage(message),
      onEnded: (ended) => void this.conversationEnded(ended),
      onState: (state, detail) => this.conversationView.setWatchState(state, detail),
    });
    const open: OpenConversation = { conversation, transcript, watch, call: undefined };
    this.current = open;
    setLinkedConversation(conversation.conversationId);
    this.conversationView.open(conversation);
    watch.start();

    const media = callMedia(conversation.channel);
    this.callPanel.open(media);
    if (media === undefined) {
      return;
    }
    if (conversation.status !== ConversationStatus.ACTIVE) {
      this.callPanel.showEnded("This call has ended.");
      return;
    }
    open.call = new Call(this.callPanel, {
      media,
      initial: joinCredentials(joinInfo),
      refresh: () => this.refreshJoin(conversation, media),
      agentName: this.home.agentName(conversation.agentId),
    });
    void open.call.connect();
  }

  /** A fresh LiveKit token for the conversation (expired token, or a call opened without join info). */
  private async refreshJoin(conversation: Conversation, media: CallMediaKind): Promise<JoinCredentials> {
    let response;
    try {
      response = await this.api.livekit.generateToken({
        conversationId: conversation.conversationId,
        agentId: conversation.agentId,
        media: media === "video" ? CallMedia.VIDEO : CallMedia.VOICE,
      });
    } catch (error) {
      throw this.tokenError(error);
    }
    return {
      url: response.url,
      token: response.token,
      expireTime: response.expireTime ? timestampDate(response.expireTime) : undefined,
    };
  }

  /** Why the page cannot get a call token, said for the call panel; only outages are worth retrying. */
  private tokenError(error: unknown): CallTokenError {
    switch (errorCode(error)) {
      case Code.NotFound:
        return new CallTokenError("This call's conversation was not found, so there is no room to join.", false);
      case Code.PermissionDenied:
        return new CallTokenError("You are not allowed to join this call: it belongs to another user.", false);
      case Code.FailedPrecondition:
        return new CallTokenError("This call has ended; its room cannot be joined any more.", false);
      case Code.Unauthenticated:
        this.reportFailure("Getting a call token", error);
        return new CallTokenError("Your sign-in has expired: sign in again to join the call.", false);
      case Code.Unavailable:
      case Code.DeadlineExceeded:
      case Code.Unknown:
      case Code.Internal:
        return new CallTokenError(`Could not get a call token: ${describeError(error, this.api.baseUrl)}`, true);
      default:
        return new CallTokenError(`Could not get a call token: ${describeError(error, this.api.baseUrl)}`, false);
    }
  }

  private applyMessage(message: Message): void {
    const open = this.current;
    if (!open || message.conversationId !== open.conversation.conversationId) {
      return;
    }
    if (open.transcript.apply(message)) {
      const entry = open.transcript.get(message.seq);
      if (entry) {
        this.conversationView.renderEntry(entry);
      }
    }
  }

  private async conversationEnded(ended: Conversation | undefined): Promise<void> {
    const open = this.current;
    if (!open) {
      return;
    }
    if (ended) {
      open.conversation = ended;
    } else {
      open.conversation.status = ConversationStatus.ENDED;
    }
    this.conversationView.render(open.conversation);
    await open.call?.hangUp();
    this.callPanel.showEnded(open.conversation.channel === Channel.TEXT ? undefined : "This call has ended.");
    void this.loadConversations();
    if (open.conversation.channel !== Channel.TEXT) {
      void this.followSummary(open);
    }
  }

  private async endCurrent(): Promise<void> {
    const open = this.current;
    if (!open) {
      return;
    }
    this.conversationView.setEnding(true);
    try {
      const response = await this.api.conversations.endConversation({
        conversationId: open.conversation.conversationId,
      });
      await this.conversationEnded(response.conversation);
    } catch (error) {
      this.conversationView.setEnding(false);
      this.reportFailure("Ending the conversation", error);
    }
  }

  /** Generates a failed reply again; the watch shows it growing again in place. */
  private async retryReply(messageId: string): Promise<void> {
    const open = this.current;
    if (!open) {
      return;
    }
    try {
      const response = await this.api.conversations.retryReply({
        conversationId: open.conversation.conversationId,
        messageId,
      });
      if (response.message) {
        this.applyMessage(response.message);
      }
    } catch (error) {
      this.reportFailure("Retrying the reply", error);
    }
  }

  /** A call's summary is written after it ends: asks for it a few times until it is there. */
  private async followSummary(open: OpenConversation): Promise<void> {
    for (let attempt = 0; attempt < 10 && this.current === open; attempt += 1) {
      await new Promise((resolve) => window.setTimeout(resolve, 1500));
      try {
        const response = await this.api.conversations.getConversation({
          conversationId: open.conversation.conversationId,
        });
        if (response.conversation && this.current === open) {
          open.conversation = response.conversation;
          this.conversationView.render(open.conversation);
          if (response.conversation.summary && response.conversation.summary.state !== SummaryState.PENDING) {
            return;
          }
        }
      } catch {
        // The next attempt tries again; the summary is also in the conversation when opened later.
      }
    }
  }

  private async sendMessage(text: string): Promise<boolean> {
    const open = this.current;
    if (!open) {
      return false;
    }
    try {
      const response = await this.api.conversations.sendMessage({
        conversationId: open.conversation.conversationId,
        text,
        requestId: newRequestId(),
      });
      // Shown at once; the same message arriving on the watch stream is then a no-op (same revision).
      if (response.message) {
        this.applyMessage(response.message);
      }
      return true;
    } catch (error) {
      this.reportFailure("Sending the message", error);
      return false;
    }
  }
}

function callMedia(channel: Channel): CallMediaKind | undefined {
  switch (channel) {
    case Channel.VOICE:
      return "voice";
    case Channel.VIDEO:
      return "video";
    default:
      return undefined;
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

/** Puts the open conversation in the address (replacing, not adding, a history entry), or takes it out. */
function setLinkedConversation(conversationId: string | undefined): void {
  const url = new URL(location.href);
  if (conversationId) {
    url.searchParams.set(CONVERSATION_PARAM, conversationId);
  } else {
    url.searchParams.delete(CONVERSATION_PARAM);
  }
  if (url.href !== location.href) {
    history.replaceState(null, "", url.toString());
  }
}
