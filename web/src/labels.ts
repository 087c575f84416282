/** Human-readable names for the contract's enums. */

import { Channel, ConversationStatus, Role } from "./gen/syntera/conversation/v1/resources_pb.js";

export function channelLabel(channel: Channel): string {
  switch (channel) {
    case Channel.TEXT:
      return "text";
    case Channel.VOICE:
      return "voice";
    case Channel.VIDEO:
      return "video";
    default:
      return "unknown";
  }
}

export function statusLabel(status: ConversationStatus): string {
  switch (status) {
    case ConversationStatus.ACTIVE:
      return "active";
    case ConversationStatus.ENDED:
      return "ended";
    case ConversationStatus.FAILED:
      return "failed";
    default:
      return "unknown";
  }
}

export function roleLabel(role: Role): string {
  return role === Role.AGENT ? "agent" : role === Role.USER ? "user" : "unknown";
}

/** The page's channel buttons name channels by their enum suffix. */
export function parseChannel(name: string | undefined): Channel {
  switch (name) {
    case "TEXT":
      return Channel.TEXT;
    case "VOICE":
      return Channel.VOICE;
    case "VIDEO":
      return Channel.VIDEO;
    default:
      return Channel.UNSPECIFIED;
  }
}
