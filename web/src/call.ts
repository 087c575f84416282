/**
 * The LiveKit side of a voice or video call: joining the room, the connection state, participants with
 * their audio levels, and the local microphone, camera and screen share.
 *
 * Nothing here talks to the Syntera API directly: fresh join credentials come through `refresh`, so the
 * page decides how to get them (LiveKitService.GenerateToken).
 */

import {
  ConnectionError,
  ConnectionErrorReason,
  ConnectionState,
  DisconnectReason,
  type Participant,
  type RemoteTrack,
  Room,
  RoomEvent,
  Track,
} from "livekit-client";

export type CallState = "connecting" | "connected" | "reconnecting" | "disconnected";
export type CallMediaKind = "voice" | "video";

/** What the page needs to join: LiveKit's URL and an access token. */
export interface JoinCredentials {
  url: string;
  token: string;
  /** When the token stops being accepted; unknown means "assume it is still good". */
  expireTime?: Date;
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
}

export interface ControlsView {
  connected: boolean;
  microphoneEnabled: boolean;
  cameraEnabled: boolean;
  screenSharing: boolean;
}

/** How the call shows itself; main.ts implements it on the DOM. */
export interface CallView {
  setState(state: CallState): void;
  setNotice(text: string | undefined): void;
  setParticipants(participants: ParticipantView[]): void;
  setControls(controls: ControlsView): void;
  addMedia(key: string, element: HTMLMediaElement): void;
  removeMedia(key: string): void;
  /** Offers a manual retry after connecting failed for good. */
  setRetryOffered(offered: boolean): void;
}

/** Tokens this close to expiry are replaced before connecting, so a join never races the clock. */
const EXPIRY_MARGIN_MS = 30_000;
/** How long to wait for LiveKit's signalling socket; short, because an unreachable server should be said quickly. */
const WEBSOCKET_TIMEOUT_MS = 8_000;
/** Automatic retries after a failed join or a dropped call, then the page offers a manual retry. */
const RETRY_DELAYS_MS = [2_000, 5_000, 15_000];
const LEVEL_REFRESH_MS = 150;

export class Call {
  private room: Room | undefined;
  private credentials: JoinCredentials | undefined;
  private stopped = false;
  private retryTimer: number | undefined;
  private levelTimer: number | undefined;
  private attempt = 0;
  private joining = false;
  private state: CallState = "disconnected";

  constructor(
    private readonly view: CallView,
    readonly media: CallMediaKind,
    initial: JoinCredentials | undefined,
    private readonly refresh: () => Promise<JoinCredentials>,
  ) {
    this.credentials = initial;
  }

  /** Joins the room; failures are shown in the view, never thrown. */
  async connect(): Promise<void> {
    this.clearRetry();
    this.view.setRetryOffered(false);
    if (this.stopped) {
      return;
    }
    this.setState("connecting");
    let credentials: JoinCredentials;
    try {
      credentials = await this.freshCredentials(false);
    } catch (error) {
      this.failed(`Could not get a call token: ${errorText(error)}`);
      return;
    }
    const room = this.newRoom();
    this.joining = true;
    try {
      await this.join(room, credentials);
    } catch (error) {
      if (isTokenRejected(error) && !this.stopped) {
        // The server refused the token (expired or revoked in the meantime): one retry with a new one.
        try {
          credentials = await this.freshCredentials(true);
          await this.join(room, credentials);
        } catch (retryError) {
          this.failed(describeJoinFailure(retryError, credentials.url));
          return;
        }
      } else {
        this.failed(describeJoinFailure(error, credentials.url));
        return;
      }
    } finally {
      this.joining = false;
    }
    if (this.stopped) {
      await room.disconnect();
      return;
    }
    this.attempt = 0;
    this.view.setNotice(undefined);
    await this.publishLocalMedia(room);
  }

  /** Leaves the room for good (hang up, conversation ended, page navigation). */
  async hangUp(): Promise<void> {
    this.stopped = true;
    this.clearRetry();
    this.view.setRetryOffered(false);
    window.clearInterval(this.levelTimer);
    const room = this.room;
    this.room = undefined;
    if (room) {
      await room.disconnect();
    }
    this.setState("disconnected");
    this.renderParticipants();
    this.renderControls();
  }

  async toggleMicrophone(): Promise<void> {
    const participant = this.room?.localParticipant;
    if (!participant) {
      return;
    }
    await this.guard("microphone", () => participant.setMicrophoneEnabled(!participant.isMicrophoneEnabled));
  }

  async toggleCamera(): Promise<void> {
    const participant = this.room?.localParticipant;
    if (!participant) {
      return;
    }
    await this.guard("camera", () => participant.setCameraEnabled(!participant.isCameraEnabled));
  }

  async toggleScreenShare(): Promise<void> {
    const participant = this.room?.localParticipant;
    if (!participant) {
      return;
    }
    await this.guard("screen share", () =>
      participant.setScreenShareEnabled(!participant.isScreenShareEnabled, { audio: true }),
    );
  }

  private async join(room: Room, credentials: JoinCredentials): Promise<void> {
    await room.connect(credentials.url, credentials.token, {
      autoSubscribe: true,
      websocketTimeout: WEBSOCKET_TIMEOUT_MS,
      maxRetries: 1,
    });
  }

  private async freshCredentials(force: boolean): Promise<JoinCredentials> {
    const current = this.credentials;
    const expiring = current?.expireTime && current.expireTime.getTime() - Date.now() < EXPIRY_MARGIN_MS;
    if (!current || force || expiring) {
      this.credentials = await this.refresh();
    }
    return this.credentials as JoinCredentials;
  }

  private newRoom(): Room {
    this.room?.removeAllListeners();
    const room = new Room({ adaptiveStream: true, dynacast: true, disconnectOnPageLeave: true });
    this.room = room;
    room
      .on(RoomEvent.ConnectionStateChanged, (state) => this.onConnectionState(room, state))
      .on(RoomEvent.Disconnected, (reason) => this.onDisconnected(room, reason))
      .on(RoomEvent.ParticipantConnected, () => this.renderParticipants())
      .on(RoomEvent.ParticipantDisconnected, () => this.renderParticipants())
      .on(RoomEvent.ActiveSpeakersChanged, () => this.renderParticipants())
      .on(RoomEvent.TrackMuted, () => this.renderAll())
      .on(RoomEvent.TrackUnmuted, () => this.renderAll())
      .on(RoomEvent.LocalTrackPublished, () => this.renderAll())
      .on(RoomEvent.LocalTrackUnpublished, (publication) => {
        this.view.removeMedia(`local:${publication.trackSid}`);
        this.renderAll();
      })
      .on(RoomEvent.TrackSubscribed, (track, publication, participant) =>
        this.view.addMedia(`${participant.identity}:${publication.trackSid}`, attachRemote(track)),
      )
      .on(RoomEvent.TrackUnsubscribed, (track, publication, participant) => {
        track.detach();
        this.view.removeMedia(`${participant.identity}:${publication.trackSid}`);
      });
    return room;
  }

  private onConnectionState(room: Room, state: ConnectionState): void {
    if (room !== this.room) {
      return;
    }
    switch (state) {
      case ConnectionState.Connected:
        this.setState("connected");
        this.startLevels();
        break;
      case ConnectionState.Connecting:
        this.setState("connecting");
        break;
      case ConnectionState.Reconnecting:
      case ConnectionState.SignalReconnecting:
        this.setState("reconnecting");
        break;
      case ConnectionState.Disconnected:
        this.setState("disconnected");
        break;
    }
    this.renderAll();
  }

  private onDisconnected(room: Room, reason: DisconnectReason | undefined): void {
    // A join that fails also ends in Disconnected; connect() handles that one itself.
    if (room !== this.room || this.stopped || this.joining) {
      return;
    }
    window.clearInterval(this.levelTimer);
    this.setState("disconnected");
    this.renderAll();
    if (reason === DisconnectReason.ROOM_DELETED || reason === DisconnectReason.PARTICIPANT_REMOVED) {
      this.view.setNotice("The call was closed by the server.");
      return;
    }
    // LiveKit already retried with the old token; a new join gets a fresh token if that one has expired.
    this.view.setNotice("The call dropped. Reconnecting…");
    this.scheduleRetry();
  }

  private failed(message: string): void {
    this.setState("disconnected");
    this.view.setNotice(message);
    this.renderAll();
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.stopped) {
      return;
    }
    this.clearRetry();
    const delay = RETRY_DELAYS_MS[this.attempt];
    if (delay === undefined) {
      this.view.setRetryOffered(true);
      return;
    }
    this.attempt += 1;
    this.retryTimer = window.setTimeout(() => void this.connect(), delay);
  }

  private clearRetry(): void {
    window.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private async publishLocalMedia(room: Room): Promise<void> {
    await this.guard("microphone", () => room.localParticipant.setMicrophoneEnabled(true));
    if (this.media === "video") {
      await this.guard("camera", () => room.localParticipant.setCameraEnabled(true));
    }
  }

  /** Runs a device action; a refused permission or missing device becomes a notice, not a broken call. */
  private async guard(what: string, action: () => Promise<unknown>): Promise<void> {
    try {
      const publication = await action();
      attachLocalVideo(this.view, publication);
    } catch (error) {
      this.view.setNotice(`Your ${what} is not available: ${errorText(error)}`);
    }
    this.renderAll();
  }

  private startLevels(): void {
    window.clearInterval(this.levelTimer);
    // Audio levels change continuously; LiveKit updates them on the participant objects, the page polls.
    this.levelTimer = window.setInterval(() => this.renderParticipants(), LEVEL_REFRESH_MS);
  }

  private setState(state: CallState): void {
    this.state = state;
    this.view.setState(state);
  }

  private renderAll(): void {
    this.renderParticipants();
    this.renderControls();
  }

  private renderParticipants(): void {
    const room = this.room;
    if (!room || this.state === "disconnected") {
      this.view.setParticipants([]);
      return;
    }
    const everyone: Participant[] = [room.localParticipant, ...room.remoteParticipants.values()];
    this.view.setParticipants(everyone.map((p) => toView(p, p === room.localParticipant)));
  }

  private renderControls(): void {
    const local = this.room?.localParticipant;
    const connected = this.state === "connected" && !!local;
    this.view.setControls({
      connected,
      microphoneEnabled: connected && local.isMicrophoneEnabled,
      cameraEnabled: connected && local.isCameraEnabled,
      screenSharing: connected && local.isScreenShareEnabled,
    });
  }
}

function toView(participant: Participant, isLocal: boolean): ParticipantView {
  const microphone = participant.getTrackPublication(Track.Source.Microphone);
  return {
    identity: participant.identity,
    name: participant.name || participant.identity,
    kind: participant.isAgent ? "agent" : "user",
    isLocal,
    audioLevel: Math.max(0, Math.min(1, participant.audioLevel)),
    speaking: participant.isSpeaking,
    microphoneMuted: !microphone || microphone.isMuted,
  };
}

function attachRemote(track: RemoteTrack): HTMLMediaElement {
  const element = track.attach();
  if (track.kind === Track.Kind.Video) {
    element.classList.add("remote-video");
  }
  return element;
}

function attachLocalVideo(view: CallView, publication: unknown): void {
  // Show the user their own camera or screen; local audio is never played back (echo).
  const track = (publication as { track?: { kind?: string; attach?: () => HTMLMediaElement } } | undefined)
    ?.track;
  const sid = (publication as { trackSid?: string } | undefined)?.trackSid;
  if (track?.kind === Track.Kind.Video && track.attach && sid) {
    const element = track.attach();
    element.classList.add("local-video");
    view.addMedia(`local:${sid}`, element);
  }
}

function isTokenRejected(error: unknown): boolean {
  return (
    error instanceof ConnectionError &&
    error.reason === ConnectionErrorReason.NotAllowed &&
    (error.status === 401 || error.status === 403)
  );
}

/** Says plainly what went wrong joining the call, and that the rest of the page still works. */
function describeJoinFailure(error: unknown, url: string): string {
  const keepsWorking = "The transcript and text chat below keep working.";
  if (isTokenRejected(error)) {
    return `The call server (LiveKit) refused your call token. ${keepsWorking}`;
  }
  if (error instanceof ConnectionError && error.reason === ConnectionErrorReason.Cancelled) {
    return "Joining the call was cancelled.";
  }
  // Refused connections, timeouts, and an address that answers but is no LiveKit server (404s on its
  // signalling path) all mean the same to the user: there is no call server to talk to.
  return `Cannot reach the call server (LiveKit) at ${url}: voice and video are unavailable. ${keepsWorking}`;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
