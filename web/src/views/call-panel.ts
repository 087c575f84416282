/**
 * The call panel: connection badge, controls, notices, the participant list (name, kind, audio level,
 * connection quality) and the media elements. It implements `CallView` on the DOM and forwards the
 * buttons to whichever call is current.
 */

import type { Call, CallMediaKind, CallState, CallView, ControlsView, ParticipantView, QualityLabel } from "../call.js";
import { byId, el, show } from "../dom.js";

const QUALITY_TEXT: Record<QualityLabel, string> = {
  excellent: "excellent connection",
  good: "good connection",
  poor: "poor connection",
  lost: "connection lost",
  unknown: "connection quality not known yet",
};
const QUALITY_BARS: Record<QualityLabel, number> = { excellent: 3, good: 2, poor: 1, lost: 0, unknown: 0 };

export class CallPanel implements CallView {
  private readonly panel = byId("call");
  private readonly badge = byId("livekit-status");
  private readonly mute = byId<HTMLButtonElement>("mute");
  private readonly camera = byId<HTMLButtonElement>("camera");
  private readonly screenShare = byId<HTMLButtonElement>("screen-share");
  private readonly reconnect = byId<HTMLButtonElement>("reconnect");
  private readonly startAudioButton = byId<HTMLButtonElement>("start-audio");
  private readonly notice = byId("call-notice");
  private readonly participants = byId<HTMLUListElement>("participants");
  private readonly media = byId("media");
  private readonly tokenExpiry = byId("token-expiry");

  constructor(current: () => Call | undefined) {
    this.mute.addEventListener("click", () => void current()?.toggleMicrophone());
    this.camera.addEventListener("click", () => void current()?.toggleCamera());
    this.screenShare.addEventListener("click", () => void current()?.toggleScreenShare());
    this.reconnect.addEventListener("click", () => void current()?.retry());
    this.startAudioButton.addEventListener("click", () => void current()?.startAudio());
    this.setParticipants([]);
  }

  /** Shows the panel for a call (or hides it for a text conversation) with the controls its media offers. */
  open(media: CallMediaKind | undefined): void {
    show(this.panel, media !== undefined);
    this.panel.dataset.media = media ?? "";
    // The camera belongs to video calls; screen sharing is offered in both, and a voice call says why
    // it cannot share rather than hiding the button.
    show(this.camera, media === "video");
    show(this.screenShare, media !== undefined);
    this.media.replaceChildren();
    this.setNotice(undefined);
    this.setRetryOffered(false);
    this.setAudioBlocked(false);
    this.setTokenExpiry(undefined);
  }

  /** A call that is over (or a conversation without a live call): everything off. */
  showEnded(text: string | undefined): void {
    this.setState("disconnected");
    this.setNotice(text);
    this.setParticipants([]);
    this.setControls({ connected: false, microphoneEnabled: false, cameraEnabled: false, screenSharing: false });
    this.setRetryOffered(false);
    this.setAudioBlocked(false);
  }

  clearMedia(): void {
    this.media.replaceChildren();
  }

  setState(state: CallState): void {
    this.badge.dataset.state = state;
    this.badge.textContent = state;
  }

  setNotice(text: string | undefined): void {
    this.notice.textContent = text ?? "";
    show(this.notice, !!text);
  }

  setParticipants(participants: ParticipantView[]): void {
    if (participants.length === 0) {
      const item = el("li", "muted", "Not in the call.");
      item.dataset.placeholder = "true";
      this.participants.replaceChildren(item);
      return;
    }
    this.participants.replaceChildren(...participants.map((p) => participantItem(p)));
  }

  setControls(controls: ControlsView): void {
    this.mute.disabled = !controls.connected;
    // "Unmute" only makes sense in a call; out of one the button is disabled and reads "Mute".
    this.mute.textContent = controls.connected && !controls.microphoneEnabled ? "Unmute" : "Mute";
    this.mute.setAttribute("aria-pressed", String(controls.connected && !controls.microphoneEnabled));
    this.camera.disabled = !controls.connected;
    this.camera.textContent = controls.cameraEnabled ? "Camera off" : "Camera on";
    this.screenShare.disabled = !controls.connected;
    this.screenShare.textContent = controls.screenSharing ? "Stop sharing" : "Share screen";
  }

  addMedia(key: string, element: HTMLMediaElement, local: boolean): void {
    element.dataset.mediaKey = key;
    element.dataset.local = String(local);
    if (local) {
      // A preview never plays sound (no echo of oneself), and muted video may play without a click.
      element.muted = true;
    }
    this.media.append(element);
  }

  removeMedia(key: string): void {
    for (const element of this.media.querySelectorAll<HTMLElement>("[data-media-key]")) {
      if (element.dataset.mediaKey === key) {
        element.remove();
      }
    }
  }

  setRetryOffered(offered: boolean): void {
    show(this.reconnect, offered);
  }

  setAudioBlocked(blocked: boolean): void {
    show(this.startAudioButton, blocked);
    this.panel.dataset.audioBlocked = String(blocked);
  }

  setTokenExpiry(expireTime: Date | undefined): void {
    this.tokenExpiry.dataset.expires = expireTime ? expireTime.toISOString() : "";
    this.tokenExpiry.textContent = expireTime ? `call token valid until ${expireTime.toLocaleTimeString()}` : "";
  }
}

function participantItem(p: ParticipantView): HTMLLIElement {
  const item = el("li", `participant ${p.kind}${p.speaking ? " speaking" : ""}`);
  item.dataset.identity = p.identity;
  item.dataset.kind = p.kind;
  item.dataset.local = String(p.isLocal);
  item.dataset.quality = p.quality;
  item.dataset.speaking = String(p.speaking);
  const level = Math.round(p.audioLevel * 100);
  const meter = el("meter", "level-meter");
  meter.min = 0;
  meter.max = 1;
  meter.value = p.audioLevel;
  meter.title = `audio level ${level}%`;
  const quality = el("span", `quality quality-${p.quality}`);
  quality.title = QUALITY_TEXT[p.quality];
  quality.setAttribute("aria-label", QUALITY_TEXT[p.quality]);
  for (let bar = 1; bar <= 3; bar += 1) {
    quality.append(el("span", bar <= QUALITY_BARS[p.quality] ? "bar on" : "bar"));
  }
  item.append(
    el("span", "name", p.isLocal ? `${p.name} (you)` : p.name),
    el("span", "tag", p.kind),
    meter,
    quality,
    el("span", "muted small mic-state", p.microphoneMuted ? "muted" : ""),
  );
  return item;
}
