/**
 * The signed-in user's bearer token.
 *
 * Kept in sessionStorage (per tab, gone when the tab closes) rather than localStorage, so a dev
 * token does not linger. A `?token=` URL parameter is accepted once and removed from the address bar.
 */

const STORAGE_KEY = "syntera.token";

/** Claims the page reads from the token, for display only: the server verifies the token. */
export interface TokenClaims {
  sub: string;
  exp?: number;
}

/** Decodes a JWT's payload without verifying it; undefined when it is not a JWT. */
export function decodeClaims(token: string): TokenClaims | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) {
    return undefined;
  }
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const claims = JSON.parse(atob(padded)) as Partial<TokenClaims>;
    return typeof claims.sub === "string" ? { sub: claims.sub, exp: claims.exp } : undefined;
  } catch {
    return undefined;
  }
}

/** Normalises what the user pasted: trims it and drops a leading `Bearer `. */
export function normaliseToken(raw: string): string {
  return raw.trim().replace(/^Bearer\s+/i, "");
}

export class Session {
  private token: string | undefined;

  constructor() {
    const url = new URL(location.href);
    const fromUrl = url.searchParams.get("token");
    if (fromUrl) {
      // Take the token out of the address bar and history so it is not shared or bookmarked.
      url.searchParams.delete("token");
      history.replaceState(null, "", url.toString());
      this.signIn(fromUrl);
    } else {
      this.token = sessionStorage.getItem(STORAGE_KEY) ?? undefined;
    }
  }

  /** Stores a token; returns its claims, or undefined (and stores nothing) when it is not a JWT. */
  signIn(raw: string): TokenClaims | undefined {
    const token = normaliseToken(raw);
    const claims = decodeClaims(token);
    if (!claims) {
      return undefined;
    }
    this.token = token;
    sessionStorage.setItem(STORAGE_KEY, token);
    return claims;
  }

  signOut(): void {
    this.token = undefined;
    sessionStorage.removeItem(STORAGE_KEY);
  }

  get bearer(): string | undefined {
    return this.token;
  }

  get claims(): TokenClaims | undefined {
    return this.token ? decodeClaims(this.token) : undefined;
  }
}
