/**
 * The LiveKit side of a voice or video call: joining the room, the connection state, participants with
 * their audio levels and connection quality, the local microphone, camera and screen share, audio
 * playback the browser may block, and rejoining after the connection is lost for good.
 *
 * Nothing here talks to the Syntera API directly: fresh join credentials come through `refresh`, so the
 * page decides how to get them (LiveKitService.GenerateToken).
 */

import {
  ConnectionError,
  ConnectionErrorReason,
  ConnectionQuality,
  ConnectionState,
  DefaultReconnectPolicy,
  DisconnectReason,
  type LocalTrackPublication,
  type Participant,
  type RemoteTrack,
  Room,
  RoomEvent,
  Track,
} from "livekit-client";

import { Backoff } from "./backoff.js";

export type CallState = "connecting" | "connected" | "reconnecting" | "disconnected";
export type CallMediaKind = "voice" | "video";
export type QualityLabel = "excellent" | "good" | "poor" | "lost" | "unknown";

/** What the page needs to join: LiveKit's URL and an access token. */
export interface JoinCredentials {
  url: string;
  token: string;
  /** When the token stops being accepted; unknown means "assume it is still good". */
  expireTime?: Date;
}

/** Getting credentials failed; `retryable` says whether trying again later can help. */
export class CallTokenError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = "CallTokenError";
  }
}

export interface ParticipantView {
  identity: string;
  name: string;
  kind: "user" | "agent";
  isLocal: boolean;
  /** 0 to 1. */
  audioLevel: number;
  speaking: boolean;
  microphoneMuted: boolean;
  quality: QualityLabel;
}

export interface ControlsView {
  connected: boolean;
  microphoneEnabled: boolean;
  cameraEnabled: boolean;
  screenSharing: boolean;
}

/** How the call shows itself; views/call-panel.ts implements it on the DOM. */
export interface CallView {
  setState(state: CallState): void;
  setNotice(text: string | undefined): void;
  setParticipants(participants: ParticipantView[]): void;
  setControls(controls: ControlsView): void;
  addMedia(key: string, element: HTMLMediaElement, local: boolean): void;
  removeMedia(key: string): void;
  /** Offers a manual retry once the page has stopped trying by itself. */
  setRetryOffered(offered: boolean): void;
  /** The browser refused to play the call's audio without a click: offer "Start audio". */
  setAudioBlocked(blocked: boolean): void;
  /** When the token the page would rejoin with expires. */
  setTokenExpiry(expireTime: Date | undefined): void;
}

export interface CallOptions {
  media: CallMediaKind;
  /** Credentials that came with the conversation, if any (otherwise `refresh` is asked first). */
  initial: JoinCredentials | undefined;
  refresh: () => Promise<JoinCredentials>;
  /** Shown for the agent when LiveKit gives it no name: the agent profile's display name. */
  agentName: string;
}

/** Tokens this close to expiry (or a quarter of their lifetime, if shorter) are replaced before a join. */
const EXPIRY_MARGIN_MS = 30_000;
/** How long to wait for LiveKit's signalling socket; short, because an unreachable server should be said quickly. */
const WEBSOCKET_TIMEOUT_MS = 8_000;
/**
 * LiveKit's own attempts to resume or restart a dropped connection with the token it holds, about 16 s
 * in all (its default keeps the caller in "reconnecting" for ~45 s). After that the page says so and
 * rejoins from scratch, with a fresh token when the old one has expired.
 */
const RECONNECT_DELAYS_MS = [0, 300, 1_200, 2_700, 4_800, 7_000];
/** The page's own rejoin attempts, after which it offers a "Reconnect" button. */
const REJOIN_BACKOFF = { initialMs: 2_000, maxMs: 15_000, maxAttempts: 3 };
const LEVEL_REFRESH_MS = 150;
/** A token refresh that failed on an outage is tried again this much later. */
const TOKEN_RETRY_MS = 5_000;
/** Browser errors that mean the device cannot be had: no point retrying without the user acting. */
const DEVICE_ERRORS = new Set(["NotAllowedError", "NotFoundError", "NotReadableError", "OverconstrainedError", "SecurityError"]);

export class Call {
  readonly media: CallMediaKind;
  private readonly room: Room;
  private readonly view: CallView;
  private readonly refresh: () => Promise<JoinCredentials>;
  private readonly agentName: string;
  private readonly rejoin = new Backoff(REJOIN_BACKOFF);
  private credentials: JoinCredentials | undefined;
  /** Milliseconds the current credentials were valid for when received (for the refresh margin). */
  private credentialsLifetime = Number.POSITIVE_INFINITY;
  private stopped = false;
  private joining = false;
  private retryTimer: number | undefined;
  private refreshTimer: number | undefined;
  private levelTimer: number | undefined;
  private state: CallState = "disconnected";
  /** The call was up once: later joins restore it ("reconnecting") rather than start it. */
  private wasConnected = false;
  /** The caller's choice: muted or not. Kept across rejoins. */
  private microphoneWanted = true;
  private microphoneStarting: Promise<void> | undefined;

  constructor(view: CallView, options: CallOptions) {
    this.view = view;
    this.media = options.media;
    this.refresh = options.refresh;
    this.agentName = options.agentName;
    this.setCredentials(options.initial);
    // One room object for the whole call: LiveKit reuses it for every (re)join, so listeners and the
    // local tracks live as long as the call does.
    this.room = new Room({
      adaptiveStream: true,
      dynacast: true,
      disconnectOnPageLeave: true,
      reconnectPolicy: new DefaultReconnectPolicy(RECONNECT_DELAYS_MS),
      // The microphone records from the moment it opens (before the join) and LiveKit hands that
      // recording to the agent when it subscribes, so the caller's first words are not lost. (As a
      // publish default: livekit-client 2.23 reads the option from here, not from the publish
      // options argument of setMicrophoneEnabled.)
      publishDefaults: { preConnectBuffer: true },
    });
    this.listen();
  }

  /** Joins the room; failures are shown in the view, never thrown. */
  async connect(): Promise<void> {
    this.clearRetry();
    this.view.setRetryOffered(false);
    if (this.stopped || this.joining) {
      return;
    }
    this.joining = true;
    this.setState(this.wasConnected ? "reconnecting" : "connecting");
    // The microphone starts before the join, with LiveKit's pre-connect buffer (see the room's
    // options): what the caller says while the token is fetched, the room joined and the agent
    // dispatched is recorded and handed to the agent when it arrives, instead of being lost.
    this.startMicrophone();
    try {
      let credentials: JoinCredentials;
      try {
        credentials = await this.freshCredentials(false);
      } catch (error) {
        this.failed(tokenFailure(error), isRetryable(error));
        return;
      }
      try {
        await this.join(credentials);
      } catch (error) {
        if (!isTokenRejected(error) || this.stopped) {
          this.failed(describeJoinFailure(error, credentials.url), joinRetryable(error));
          return;
        }
        // The server refused the token (expired or revoked in the meantime): one retry with a new one.
        try {
          credentials = await this.freshCredentials(true);
          await this.join(credentials);
        } catch (retryError) {
          this.failed(
            retryError instanceof CallTokenError ? retryError.message : describeJoinFailure(retryError, credentials.url),
            isRetryable(retryError) && joinRetryable(retryError),
          );
          return;
        }
      }
    } finally {
      this.joining = false;
    }
    if (this.stopped) {
      await this.room.disconnect();
      return;
    }
    this.rejoin.reset();
    this.wasConnected = true;
    this.view.setNotice(undefined);
    this.setState("connected");
    this.renderAll();
    await this.publishLocalMedia();
  }

  /** Leaves the room for good (hang up, conversation ended, another conversation opened). */
  async hangUp(): Promise<void> {
    this.stopped = true;
    this.clearRetry();
    window.clearTimeout(this.refreshTimer);
    this.view.setRetryOffered(false);
    this.view.setAudioBlocked(false);
    window.clearInterval(this.levelTimer);
    await this.room.disconnect();
    this.room.removeAllListeners();
    this.setState("disconnected");
    this.renderAll();
  }

  /** The page's "Reconnect" button: a join right now, with the automatic attempts counted from zero. */
  async retry(): Promise<void> {
    this.rejoin.reset();
    await this.connect();
  }

  async toggleMicrophone(): Promise<void> {
    const local = this.room.localParticipant;
    // A new action replaces the explanation of the last one (a refused share, a blocked device).
    this.view.setNotice(undefined);
    this.microphoneWanted = !local.isMicrophoneEnabled;
    await this.guard("microphone", () => local.setMicrophoneEnabled(this.microphoneWanted));
  }

  async toggleCamera(): Promise<void> {
    const local = this.room.localParticipant;
    this.view.setNotice(undefined);
    if (!this.mayPublish(Track.Source.Camera)) {
      this.view.setNotice("This is a voice call: the camera is not part of it. Start a video call to be seen.");
      return;
    }
    await this.guard("camera", () => local.setCameraEnabled(!local.isCameraEnabled));
  }

  async toggleScreenShare(): Promise<void> {
    const local = this.room.localParticipant;
    this.view.setNotice(undefined);
    // LiveKit ignores a publish the token does not allow and the SDK only gives up after ~10 s, so
    // the page reads the grant itself and says at once why it cannot share.
    if (!local.isScreenShareEnabled && !this.mayPublish(Track.Source.ScreenShare)) {
      this.view.setNotice(
        "Screen sharing is not available in a voice call. Start a video call to share your screen.",
      );
      return;
    }
    await this.guard("screen share", () =>
      local.setScreenShareEnabled(!local.isScreenShareEnabled, { audio: this.mayPublish(Track.Source.ScreenShareAudio) }),
    );
  }

  /** The "Start audio" button: a click is what the browser wanted before playing the call's sound. */
  async startAudio(): Promise<void> {
    try {
      await this.room.startAudio();
    } catch (error) {
      this.view.setNotice(`The browser still refuses to play the call's audio: ${errorText(error)}`);
    }
    this.view.setAudioBlocked(!this.room.canPlaybackAudio);
  }

  private async join(credentials: JoinCredentials): Promise<void> {
    await this.room.connect(credentials.url, credentials.token, {
      autoSubscribe: true,
      websocketTimeout: WEBSOCKET_TIMEOUT_MS,
      maxRetries: 1,
    });
  }

  private async freshCredentials(force: boolean): Promise<JoinCredentials> {
    const current = this.credentials;
    const margin = Math.min(EXPIRY_MARGIN_MS, this.credentialsLifetime / 4);
    const expiring = current?.expireTime && current.expireTime.getTime() - Date.now() < margin;
    if (!current || force || expiring) {
      this.setCredentials(await this.refresh());
    }
    return this.credentials as JoinCredentials;
  }

  private setCredentials(credentials: JoinCredentials | undefined): void {
    this.credentials = credentials;
    const expires = credentials?.expireTime?.getTime();
    this.credentialsLifetime = expires === undefined ? Number.POSITIVE_INFINITY : Math.max(0, expires - Date.now());
    this.view.setTokenExpiry(credentials?.expireTime);
    this.scheduleRefresh();
  }

  /**
   * Replaces the token shortly before it expires, for as long as the call lasts. LiveKit keeps a
   * joined call going on tokens of its own, but when the connection is lost for good the page rejoins
   * with this one: fetched ahead, that rejoin never starts with a dead token (and a refused join).
   */
  private scheduleRefresh(): void {
    window.clearTimeout(this.refreshTimer);
    const expires = this.credentials?.expireTime?.getTime();
    if (expires === undefined || this.stopped) {
      return;
    }
    const margin = Math.min(EXPIRY_MARGIN_MS, this.credentialsLifetime / 4);
    this.refreshTimer = window.setTimeout(() => void this.refreshAhead(), Math.max(0, expires - margin - Date.now()));
  }

  private async refreshAhead(): Promise<void> {
    if (this.stopped) {
      return;
    }
    try {
      this.setCredentials(await this.refresh());
    } catch (error) {
      // An outage of the API: try again soon. A refusal (the call ended, access withdrawn) is said
      // by the next join, if there is one.
      if (isRetryable(error) && !this.stopped) {
        this.refreshTimer = window.setTimeout(() => void this.refreshAhead(), TOKEN_RETRY_MS);
      }
    }
  }

  private listen(): void {
    const room = this.room;
    room
      .on(RoomEvent.Reconnecting, () => this.onReconnecting())
      .on(RoomEvent.SignalReconnecting, () => this.onReconnecting())
      .on(RoomEvent.Reconnected, () => {
        this.setState("connected");
        this.view.setNotice(undefined);
        this.renderAll();
      })
      .on(RoomEvent.Disconnected, (reason) => this.onDisconnected(reason))
      .on(RoomEvent.ParticipantConnected, () => this.renderParticipants())
      .on(RoomEvent.ParticipantDisconnected, () => this.renderParticipants())
      .on(RoomEvent.ActiveSpeakersChanged, () => this.renderParticipants())
      .on(RoomEvent.ConnectionQualityChanged, () => this.renderParticipants())
      .on(RoomEvent.AudioPlaybackStatusChanged, () => this.view.setAudioBlocked(!room.canPlaybackAudio))
      .on(RoomEvent.TrackMuted, () => this.renderAll())
      .on(RoomEvent.TrackUnmuted, () => this.renderAll())
      .on(RoomEvent.LocalTrackPublished, (publication) => {
        this.showLocalVideo(publication);
        this.renderAll();
      })
      .on(RoomEvent.LocalTrackUnpublished, (publication) => {
        this.view.removeMedia(`local:${publication.trackSid}`);
        this.renderAll();
      })
      .on(RoomEvent.TrackSubscribed, (track, publication, participant) =>
        this.view.addMedia(`${participant.identity}:${publication.trackSid}`, attachRemote(track), false),
      )
      .on(RoomEvent.TrackUnsubscribed, (track, publication, participant) => {
        track.detach();
        this.view.removeMedia(`${participant.identity}:${publication.trackSid}`);
      });
  }

  private onReconnecting(): void {
    if (this.stopped) {
      return;
    }
    this.setState("reconnecting");
    this.view.setNotice("Lost the connection to the call server. Reconnecting…");
    this.renderAll();
  }

  private onDisconnected(reason: DisconnectReason | undefined): void {
    // A join that fails also ends in Disconnected; connect() reports that one itself.
    if (this.stopped || this.joining) {
      return;
    }
    this.view.setAudioBlocked(false);
    const final = finalDisconnect(reason);
    if (final) {
      this.giveUp(final);
      return;
    }
    // LiveKit gave up resuming (or the server closed the connection as it shut down): a new join,
    // with a fresh token if the old one has expired.
    this.retryLater("The connection to the call server was lost. Rejoining…");
  }

  private failed(message: string, retryable: boolean): void {
    if (retryable) {
      this.retryLater(message);
    } else {
      this.giveUp(message);
    }
  }

  /** Joins again after a backoff; when the attempts are used up, gives up saying `message`. */
  private retryLater(message: string): void {
    if (this.stopped) {
      return;
    }
    this.clearRetry();
    const delay = this.rejoin.next();
    if (delay === undefined) {
      this.giveUp(`${message} Press Reconnect to try again.`);
      return;
    }
    // A call that was up is being restored: "reconnecting" until it is, or until the page stops trying.
    this.setState(this.wasConnected ? "reconnecting" : "disconnected");
    this.view.setNotice(message);
    this.renderAll();
    this.retryTimer = window.setTimeout(() => void this.connect(), delay);
  }

  /** Stops trying by itself: says why and offers the Reconnect button. */
  private giveUp(message: string): void {
    this.clearRetry();
    this.setState("disconnected");
    this.view.setNotice(message);
    this.renderAll();
    this.view.setRetryOffered(true);
  }

  private clearRetry(): void {
    window.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private mayPublish(source: Track.Source): boolean {
    const permissions = this.room.localParticipant.permissions;
    if (!permissions?.canPublish) {
      return false;
    }
    const sources = permissions.canPublishSources.map((s) => Track.sourceFromProto(s));
    return sources.length === 0 || sources.includes(source);
  }

  /** Opens the microphone (once at a time), recording into the pre-connect buffer until the agent listens. */
  private startMicrophone(): void {
    const local = this.room.localParticipant;
    if (!this.microphoneWanted || this.microphoneStarting || local.getTrackPublication(Track.Source.Microphone)) {
      return;
    }
    this.microphoneStarting = this.guard("microphone", () => local.setMicrophoneEnabled(true)).finally(() => {
      this.microphoneStarting = undefined;
    });
  }

  private async publishLocalMedia(): Promise<void> {
    // A microphone opened before a join that failed was closed with it: open it again now.
    await this.microphoneStarting;
    this.startMicrophone();
    await this.microphoneStarting;
    if (this.media === "video" && !this.room.localParticipant.isCameraEnabled) {
      await this.guard("camera", () => this.room.localParticipant.setCameraEnabled(true));
    }
  }

  /** Runs a device action; a refused permission or missing device becomes a notice, not a broken call. */
  private async guard(what: string, action: () => Promise<unknown>): Promise<void> {
    try {
      await action();
    } catch (error) {
      if (isDeviceError(error)) {
        this.view.setNotice(deviceFailure(what, error as DOMException));
      } else if (this.state === "connected" && !this.stopped) {
        this.view.setNotice(`Your ${what} is not available: ${errorText(error)}`);
      }
      // Otherwise the join itself failed and said so; the device is opened again after the next join.
    }
    this.renderAll();
  }

  private showLocalVideo(publication: LocalTrackPublication): void {
    // Show the user their own camera or screen; local audio is never played back (echo).
    const track = publication.track;
    if (track?.kind === Track.Kind.Video) {
      const element = track.attach();
      element.classList.add("local-video");
      element.dataset.source = publication.source;
      this.view.addMedia(`local:${publication.trackSid}`, element, true);
    }
  }

  private setState(state: CallState): void {
    this.state = state;
    this.view.setState(state);
    window.clearInterval(this.levelTimer);
    if (state === "connected") {
      // Audio levels change continuously; LiveKit updates them on the participant objects, the page polls.
      this.levelTimer = window.setInterval(() => this.renderParticipants(), LEVEL_REFRESH_MS);
    }
  }

  private renderAll(): void {
    this.renderParticipants();
    this.renderControls();
  }

  private renderParticipants(): void {
    const room = this.room;
    // Listed while in the room, including while LiveKit resumes a dropped connection; not while the
    // page is between joins.
    const inRoom = room.state === ConnectionState.Connected || room.state === ConnectionState.Reconnecting || room.state === ConnectionState.SignalReconnecting;
    if (!inRoom || this.stopped) {
      this.view.setParticipants([]);
      return;
    }
    const everyone: Participant[] = [room.localParticipant, ...room.remoteParticipants.values()];
    this.view.setParticipants(everyone.map((p) => this.toView(p, p === room.localParticipant)));
  }

  private renderControls(): void {
    const local = this.room.localParticipant;
    const connected = this.state === "connected" && !this.stopped;
    this.view.setControls({
      connected,
      microphoneEnabled: connected && local.isMicrophoneEnabled,
      cameraEnabled: connected && local.isCameraEnabled,
      screenSharing: connected && local.isScreenShareEnabled,
    });
  }

  private toView(participant: Participant, isLocal: boolean): ParticipantView {
    const microphone = participant.getTrackPublication(Track.Source.Microphone);
    const agent = participant.isAgent;
    return {
      identity: participant.identity,
      name: participant.name || (agent ? this.agentName : participant.identity),
      kind: agent ? "agent" : "user",
      isLocal,
      audioLevel: Math.max(0, Math.min(1, participant.audioLevel)),
      speaking: participant.isSpeaking,
      microphoneMuted: !microphone || microphone.isMuted,
      quality: qualityLabel(participant.connectionQuality),
    };
  }
}

function qualityLabel(quality: ConnectionQuality): QualityLabel {
  switch (quality) {
    case ConnectionQuality.Excellent:
      return "excellent";
    case ConnectionQuality.Good:
      return "good";
    case ConnectionQuality.Poor:
      return "poor";
    case ConnectionQuality.Lost:
      return "lost";
    default:
      return "unknown";
  }
}

function attachRemote(track: RemoteTrack): HTMLMediaElement {
  const element = track.attach();
  if (track.kind === Track.Kind.Video) {
    element.classList.add("remote-video");
  }
  return element;
}

/** What to tell the caller when the server ended the call in a way a quick rejoin would not undo. */
function finalDisconnect(reason: DisconnectReason | undefined): string | undefined {
  switch (reason) {
    case DisconnectReason.ROOM_DELETED:
      return "The call's room was closed on the call server. Press Reconnect to open it again.";
    case DisconnectReason.PARTICIPANT_REMOVED:
      return "You were removed from the call.";
    case DisconnectReason.DUPLICATE_IDENTITY:
      return "You joined this call from another window or device, so this page left it.";
    default:
      return undefined;
  }
}

function isTokenRejected(error: unknown): boolean {
  return (
    error instanceof ConnectionError &&
    error.reason === ConnectionErrorReason.NotAllowed &&
    (error.status === 401 || error.status === 403)
  );
}

function isRetryable(error: unknown): boolean {
  return !(error instanceof CallTokenError) || error.retryable;
}

/** A refused token or a missing room will be refused again; an unreachable server may come back. */
function joinRetryable(error: unknown): boolean {
  return !(error instanceof ConnectionError && error.reason === ConnectionErrorReason.NotAllowed);
}

function tokenFailure(error: unknown): string {
  return error instanceof CallTokenError ? error.message : `Could not get a call token: ${errorText(error)}`;
}

/** Says plainly what went wrong joining the call, and that the rest of the page still works. */
function describeJoinFailure(error: unknown, url: string): string {
  const keepsWorking = "The transcript and text chat below keep working.";
  if (isTokenRejected(error)) {
    return `The call server (LiveKit) refused your call token. ${keepsWorking}`;
  }
  if (error instanceof ConnectionError && error.reason === ConnectionErrorReason.NotAllowed && error.status === 404) {
    return `The call's room was not found on the call server (LiveKit). ${keepsWorking}`;
  }
  if (error instanceof ConnectionError && error.reason === ConnectionErrorReason.Cancelled) {
    return "Joining the call was cancelled.";
  }
  // Refused connections, timeouts, and an address that answers but is no LiveKit server (404s on its
  // signalling path) all mean the same to the user: there is no call server to talk to.
  return `Cannot reach the call server (LiveKit) at ${url}: voice and video are unavailable. ${keepsWorking}`;
}

function isDeviceError(error: unknown): boolean {
  return error instanceof DOMException && DEVICE_ERRORS.has(error.name);
}

function deviceFailure(what: string, error: DOMException): string {
  if (error.name === "NotAllowedError" || error.name === "SecurityError") {
    return (
      `The browser blocked your ${what}. Allow it for this site (the icon in the address bar) and ` +
      `press ${what === "microphone" ? "Unmute" : "the button"} again; you can still listen and type.`
    );
  }
  if (error.name === "NotFoundError") {
    return `No ${what} was found on this device; you can still listen and type.`;
  }
  return `Your ${what} is not available (${error.name}: ${error.message}).`;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
