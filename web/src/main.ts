/**
 * The call page's entry point: reads where the edge is, builds the API clients and starts the app.
 * Everything else lives in app.ts (state), views/ (the DOM), call.ts (LiveKit) and watch.ts (streams).
 */

import "./style.css";

import { LogLevel, setLogLevel } from "livekit-client";

import { createApi } from "./api.js";
import { App } from "./app.js";
import { loadConfig } from "./config.js";
import { byId } from "./dom.js";
import { Session } from "./session.js";

async function start(): Promise<void> {
  // livekit-client logs every signalling step at info; the page reports what matters itself.
  setLogLevel(LogLevel.warn);
  const config = await loadConfig();
  const session = new Session();
  const api = createApi(config.apiBaseUrl, () => session.bearer);
  byId("api-endpoint").textContent = `API ${config.apiBaseUrl}`;
  await new App(api, session).start();
  document.body.dataset.ready = "true";
}

void start();
