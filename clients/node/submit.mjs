// Submit one OpenQASM job to qbus and print its final event as JSON.
//
// Only the official nats.js client and Node's standard library are used: the job is
// plain JSON (docs/protocol.md), the same bytes any language would send.
//
//   npm ci && node submit.mjs --url nats://127.0.0.1:4222 --shots 1000
//
// --traceparent 00-<trace id>-<span id>-01 continues a trace of yours: every qbus stage's
// span joins it (docs/observability.md); without it the job starts a trace of its own.
//
// The result is read through a JetStream ordered consumer on qbus.result.<job>, started
// before the job is published: it cannot miss the final event, and because it reads the
// stream it would also find a result stored before it started.
//
// Exit status: 0 on job.completed, 1 on job.failed / job.rejected, 2 on errors.
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { connect, headers } from "nats";

const BELL = `OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
`;

const { values: args } = parseArgs({
  options: {
    url: { type: "string", default: "nats://127.0.0.1:4222" },
    prefix: { type: "string", default: "qbus" },
    stream: { type: "string", default: "QBUS" },
    file: { type: "string" },
    shots: { type: "string", default: "1000" },
    "job-id": { type: "string" },
    timeout: { type: "string", default: "60" },
    traceparent: { type: "string" },
  },
});

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

const jobId = args["job-id"] ?? `node-${randomBytes(8).toString("hex")}`;
const eventId = randomUUID();
// W3C trace context: version 00, 16-byte trace id, 8-byte parent span id, sampled.
const traceparent =
  args.traceparent ??
  `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
if (!/^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/.test(traceparent)) {
  fail(`--traceparent ${traceparent}: expected 00-<32 hex>-<16 hex>-<2 hex> (W3C)`);
}
const job = {
  type: "job.submitted",
  event_id: eventId,
  job_id: jobId,
  producer: "node-client",
  source: args.file ? readFileSync(args.file, "utf8") : BELL,
  shots: Number.parseInt(args.shots, 10),
};

let nc;
try {
  nc = await connect({ servers: args.url, name: "qbus-node-client" });
} catch (err) {
  fail(`cannot connect to ${args.url}: ${err.message}`);
}
const js = nc.jetstream();

// An ordered consumer: ephemeral, flow-controlled, recreated by the client on gaps.
const consumer = await js.consumers.get(args.stream, {
  filterSubjects: [`${args.prefix}.result.${jobId}`],
});
const messages = await consumer.consume();

const h = headers();
h.set("Nats-Msg-Id", eventId); // the server drops a second copy inside its duplicate window
h.set("traceparent", traceparent);
try {
  await js.publish(`${args.prefix}.submit`, new TextEncoder().encode(JSON.stringify(job)), {
    headers: h,
  });
} catch (err) {
  fail(`publish failed: ${err.message}`);
}
console.error(`submitted ${jobId} (traceparent ${traceparent})`);

const timer = setTimeout(() => {
  console.error(`error: no result for ${jobId} within ${args.timeout} s`);
  process.exit(2);
}, Number.parseFloat(args.timeout) * 1000);

let final;
for await (const m of messages) {
  final = m.json(); // a job has exactly one final event
  break;
}
clearTimeout(timer);
await messages.close();
await nc.drain();

console.log(JSON.stringify(final));
process.exit(final?.type === "job.completed" ? 0 : 1);
