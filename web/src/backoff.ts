/**
 * Waiting between attempts, shared by everything on the page that reconnects: the conversation list's
 * watch, a conversation's transcript watch and a call's rejoin.
 */

export interface BackoffOptions {
  /** Delay after the first failure. */
  initialMs: number;
  /** No delay grows beyond this. */
  maxMs: number;
  /** Failures after which `next()` gives up (returns undefined); unlimited when not set. */
  maxAttempts?: number;
}

/**
 * Exponential backoff: after n failures in a row the delay is `initialMs * 2^(n-1)`, capped, with up
 * to a fifth taken off at random so that many pages cut off together (an edge restart) do not all
 * come back in the same instant.
 */
export class Backoff {
  private failures = 0;

  constructor(private readonly options: BackoffOptions) {}

  /** Counts one more failure; returns how long to wait before the next attempt, or undefined to give up. */
  next(): number | undefined {
    this.failures += 1;
    const { initialMs, maxMs, maxAttempts } = this.options;
    if (maxAttempts !== undefined && this.failures > maxAttempts) {
      return undefined;
    }
    const delay = Math.min(maxMs, initialMs * 2 ** (this.failures - 1));
    return Math.round(delay * (1 - Math.random() * 0.2));
  }

  /** An attempt worked: the next failure starts from the initial delay again. */
  reset(): void {
    this.failures = 0;
  }

  /** Failures in a row so far. */
  get attempts(): number {
    return this.failures;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const timer = window.setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        window.clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}
