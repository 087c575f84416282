// A headless Chromium driven over stdin/stdout, one JSON command per line, for the Python tests
// (tests/web/). The tests keep the scenario and the assertions; this only does what they ask.
//
//   node web/e2e/driver.mjs [options-json]   then write {"id":1,"cmd":"goto","url":"http://..."} lines.
//
// The optional first argument is a JSON object choosing how the browser stands in for a person:
//   fakeAudioFile  absolute path of a WAV the fake microphone plays (once) instead of a beep
//   autoplay       Chromium's --autoplay-policy (e.g. "no-user-gesture-required"); default: Chromium's
//   media          "allow" (default: every camera/microphone/screen request is granted) or "deny"
//
// Uses Debian's chromium (CHROMIUM_PATH, default /usr/bin/chromium) through playwright-core: no browser
// download. The flags keep Chromium off the network (no updates, sync, QUIC or background requests),
// and every run gets a fresh temporary profile from playwright's launch().
import readline from "node:readline";

import { chromium } from "playwright-core";

const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const options = JSON.parse(process.argv[2] || "{}");
const args = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
  // Synthetic camera and microphone instead of the machine's devices.
  "--use-fake-device-for-media-stream",
];
if (options.media !== "deny") {
  // Answer the page's device and screen requests with "allow" instead of a prompt; without this
  // flag headless Chromium refuses them, as a person clicking "Block" would.
  args.push("--use-fake-ui-for-media-stream");
}
if (options.fakeAudioFile) {
  // %noloop: the recording plays once from the moment the page opens the microphone, then silence.
  args.push(`--use-file-for-fake-audio-capture=${options.fakeAudioFile}%noloop`);
}
if (options.autoplay) {
  args.push(`--autoplay-policy=${options.autoplay}`);
}

const browser = await chromium.launch({ executablePath, args, headless: true });
let context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
let page = await context.newPage();
const consoleLines = [];
function watchPage(p) {
  p.on("console", (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`));
  p.on("pageerror", (err) => consoleLines.push(`pageerror: ${err.message}`));
}
watchPage(page);

const DEFAULT_TIMEOUT = 10_000;

// playwright-core's JS API treats a string as an expression and never calls it; the tests send
// function sources, so rebuild the function here (playwright then ships its source to the page).
function toFunction(source) {
  return new Function(`return (${source});`)();
}

const commands = {
  // Runs `source` in every page of the context before the page's own scripts (probes that must see
  // the page from its first moment, e.g. when it opens the microphone).
  async initScript({ source }) {
    await context.addInitScript(source);
    return true;
  },
  async goto({ url }) {
    const response = await page.goto(url, { waitUntil: "load", timeout: DEFAULT_TIMEOUT });
    return response ? response.status() : null;
  },
  async newContext() {
    await context.close();
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    watchPage(page);
    return true;
  },
  async fill({ selector, value }) {
    await page.fill(selector, value, { timeout: DEFAULT_TIMEOUT });
    return true;
  },
  async click({ selector }) {
    await page.click(selector, { timeout: DEFAULT_TIMEOUT });
    return true;
  },
  async press({ selector, key }) {
    await page.press(selector, key, { timeout: DEFAULT_TIMEOUT });
    return true;
  },
  async wait({ selector, state = "visible", timeout = DEFAULT_TIMEOUT }) {
    await page.waitForSelector(selector, { state, timeout });
    return true;
  },
  // `expression` is a function body's source taking `arg`; resolves when it returns a truthy value,
  // which is sent back.
  async waitFor({ expression, arg = null, timeout = DEFAULT_TIMEOUT }) {
    const handle = await page.waitForFunction(toFunction(expression), arg, { timeout, polling: "raf" });
    return await handle.jsonValue();
  },
  async eval({ expression, arg = null }) {
    return await page.evaluate(toFunction(expression), arg);
  },
  async text({ selector }) {
    return await page.textContent(selector, { timeout: DEFAULT_TIMEOUT });
  },
  async attr({ selector, name }) {
    return await page.getAttribute(selector, name, { timeout: DEFAULT_TIMEOUT });
  },
  async screenshot({ path }) {
    await page.screenshot({ path, fullPage: true });
    return path;
  },
  async console() {
    return consoleLines.slice();
  },
  async close() {
    await browser.close();
    return true;
  },
};

function reply(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

reply({ id: 0, ok: true, value: { ready: true, version: browser.version() } });

const lines = readline.createInterface({ input: process.stdin });
// Commands run one at a time, in order: the tests are sequential scripts.
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    let request;
    try {
      request = JSON.parse(line);
    } catch {
      reply({ id: null, ok: false, error: "not JSON" });
      return;
    }
    const handler = commands[request.cmd];
    if (!handler) {
      reply({ id: request.id, ok: false, error: `unknown command ${request.cmd}` });
      return;
    }
    try {
      const value = await handler(request);
      reply({ id: request.id, ok: true, value: value ?? null });
    } catch (error) {
      reply({ id: request.id, ok: false, error: String(error?.message ?? error) });
    }
    if (request.cmd === "close") {
      process.exit(0);
    }
  });
});
lines.on("close", () => {
  void queue.then(() => browser.close()).finally(() => process.exit(0));
});
