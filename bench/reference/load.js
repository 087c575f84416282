// bench token's load generator: autocannon in its own process, closed loop over keep-alive HTTP/1.1
// connections, the same for our edge and for the reference.
//
// `node load.js CONFIG.json` where CONFIG is {url, connections, durationSeconds, warmupSeconds,
// timeoutSeconds, requests: [{path, headers, body}]}. Each request is the next of `requests`.
// Prints one JSON line: requests answered 2xx, errors (other statuses, connection errors,
// timeouts), the measured window, and p50/p99 of the 2xx latencies in ms (nearest rank, from
// autocannon's per-response timings, not its millisecond-rounded histogram).
'use strict';

const fs = require('node:fs');
const autocannon = require('autocannon');

let cursor = 0;

function run(config, seconds, record) {
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: config.url,
        connections: config.connections,
        duration: seconds,
        timeout: config.timeoutSeconds,
        // One shared cursor over `requests` for all connections, not one per connection: the
        // connections would otherwise ask for the same conversation in lockstep.
        requests: [
          {
            method: 'POST',
            setupRequest: (req) => {
              const next = config.requests[cursor++ % config.requests.length];
              return { ...req, path: next.path, headers: next.headers, body: next.body };
            },
          },
        ],
      },
      (err, result) => (err ? reject(err) : resolve(result)),
    );
    if (record) {
      instance.on('response', (_client, statusCode, _bytes, ms) => {
        if (statusCode >= 200 && statusCode < 300) record.latencies.push(ms);
        else record.statuses[statusCode] = (record.statuses[statusCode] || 0) + 1;
      });
    }
  });
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.max(1, Math.ceil((q / 100) * sorted.length)) - 1];
}

async function main() {
  const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  if (config.warmupSeconds > 0) await run(config, config.warmupSeconds, null);
  const record = { latencies: [], statuses: {} };
  const started = process.hrtime.bigint();
  const result = await run(config, config.durationSeconds, record);
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const sorted = Float64Array.from(record.latencies).sort();
  const non2xx = Object.values(record.statuses).reduce((a, b) => a + b, 0);
  process.stdout.write(
    `${JSON.stringify({
      requests: sorted.length,
      errors: non2xx + result.errors + result.timeouts,
      statuses: record.statuses,
      connectionErrors: result.errors,
      timeouts: result.timeouts,
      elapsedSeconds: elapsed,
      perSecond: sorted.length / elapsed,
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
    })}\n`,
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
