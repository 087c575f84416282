/**
 * Runtime configuration: where the gRPC-web edge (Envoy) is.
 *
 * The built page is static; whoever serves it writes `config.json` next to `index.html`
 * (devrun does), so one build works against any edge address.
 */

export interface PageConfig {
  /** Base URL of the Envoy listener, e.g. `http://127.0.0.1:8080`. */
  apiBaseUrl: string;
}

const DEFAULT_ENVOY_PORT = 8080;

/** Reads `config.json`; falls back to Envoy's default port on the page's own host. */
export async function loadConfig(): Promise<PageConfig> {
  const fallback = `${location.protocol}//${location.hostname}:${DEFAULT_ENVOY_PORT}`;
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (!response.ok) {
      return { apiBaseUrl: fallback };
    }
    const body = (await response.json()) as Partial<PageConfig>;
    const base = typeof body.apiBaseUrl === "string" && body.apiBaseUrl ? body.apiBaseUrl : fallback;
    return { apiBaseUrl: base.replace(/\/+$/, "") };
  } catch {
    // No config.json (e.g. `vite dev`): the conventional local edge.
    return { apiBaseUrl: fallback };
  }
}
