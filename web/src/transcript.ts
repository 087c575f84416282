/**
 * The conversation's messages as the page holds them, keyed by `seq`.
 *
 * WatchConversation sends a message again whenever it changes (interim text grows, the turn becomes
 * final, it is marked interrupted): the copy with the higher `revision` wins, so a late or repeated
 * event never takes a turn back to an older state.
 */

import { type Message, type Reply, Role, MessageSource } from "./gen/syntera/conversation/v1/resources_pb.js";

export interface TranscriptEntry {
  seq: bigint;
  revision: bigint;
  role: Role;
  source: MessageSource;
  text: string;
  final: boolean;
  interrupted: boolean;
  messageId: string;
  /** Set on the agent's replies in text conversations (see reply.ts). */
  reply: Reply | undefined;
}

export class Transcript {
  private readonly entries = new Map<bigint, TranscriptEntry>();

  /** Applies a message; returns true when it changed what the page shows. */
  apply(message: Message): boolean {
    const current = this.entries.get(message.seq);
    if (current && current.revision >= message.revision) {
      return false;
    }
    this.entries.set(message.seq, {
      seq: message.seq,
      revision: message.revision,
      role: message.role,
      source: message.source,
      text: message.text,
      final: message.final,
      interrupted: message.interrupted,
      messageId: message.messageId,
      reply: message.reply,
    });
    return true;
  }

  /**
   * The resume point for WatchConversation, as the contract defines it: the highest `seq` up to which
   * every held message is final (the lowest interim `seq` minus one, else the highest `seq`), so a
   * turn that became final while the stream was down is sent again. 0 when nothing is held.
   */
  get lastSeq(): bigint {
    let last = 0n;
    let lowestInterim: bigint | undefined;
    for (const entry of this.entries.values()) {
      if (entry.seq > last) {
        last = entry.seq;
      }
      if (!entry.final && (lowestInterim === undefined || entry.seq < lowestInterim)) {
        lowestInterim = entry.seq;
      }
    }
    return lowestInterim === undefined ? last : lowestInterim - 1n;
  }

  /** Entries in `seq` order. */
  ordered(): TranscriptEntry[] {
    return [...this.entries.values()].sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
  }

  get(seq: bigint): TranscriptEntry | undefined {
    return this.entries.get(seq);
  }

  clear(): void {
    this.entries.clear();
  }
}
