// Recompute a qbus result hash from a job.completed event's JSON alone (docs/protocol.md,
// "The result hash"), with nothing but Node's standard library.
//
//   node result_hash.mjs < job-completed.json
//
// prints the recomputed hash. Exit status: 0 when it equals the event's result_hash,
// 1 when it differs, 2 on errors (not a job.completed, a hash version other than 2).
//
// Version 2 is sha256 over the RFC 8785 canonical JSON of the result document. For the
// values that document holds (objects, arrays, strings, finite numbers, null: what
// JSON.parse gives) RFC 8785 is JSON.stringify with every object's keys sorted by UTF-16
// code units, which is what Array.prototype.sort does to strings.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

/** RFC 8785 canonical JSON of a value made by JSON.parse. */
export function canonicalJson(value) {
  if (Array.isArray(value)) {
    return `[${value.map(canonicalJson).join(",")}]`;
  }
  if (value !== null && typeof value === "object") {
    const members = Object.keys(value)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalJson(value[key])}`);
    return `{${members.join(",")}}`;
  }
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new Error(`RFC 8785 has no form for ${value}`);
  }
  // Numbers as ECMAScript's Number.prototype.toString writes them (5, 0.5, 1e+21),
  // which is RFC 8785's number form; strings with JSON.stringify's escapes, also its.
  return JSON.stringify(value);
}

/** `sha256:<hex>` of a state vector's interleaved float64 values, little-endian. */
export function statevectorDigest(floats) {
  const bytes = new DataView(new ArrayBuffer(floats.length * 8));
  floats.forEach((x, i) => bytes.setFloat64(i * 8, x, true));
  return `sha256:${createHash("sha256").update(new Uint8Array(bytes.buffer)).digest("hex")}`;
}

/** The document a version 2 result hash covers, from a job.completed event. */
export function resultDocument(event) {
  const doc = {
    v: 2,
    circuit_hash: event.circuit_hash,
    engine: event.engine,
    engine_version: event.engine_version,
    method: event.method,
    shots: event.shots,
    seed: event.seed,
    counts: event.counts ?? null,
    statevector: event.statevector == null ? null : statevectorDigest(event.statevector),
    statevector_ref: event.statevector_ref ?? null,
  };
  // Present only when the result has them: absent, not null, otherwise.
  for (const key of ["expectations", "noise", "dynamics", "sweep_results"]) {
    if (event[key] != null) {
      doc[key] = event[key];
    }
  }
  return doc;
}

/** The result hash of a job.completed event (parsed JSON), recomputed. */
export function resultHash(event) {
  if (event.type !== "job.completed") {
    throw new Error(`a ${event.type} event carries no result hash`);
  }
  // Events written before version 2 carry no hash_version: their hashes are version 1,
  // msgspec's encoding, which only qbus itself recomputes (qbus audit verify).
  const version = event.hash_version ?? 1;
  if (version !== 2) {
    throw new Error(`hash version ${version}: this client recomputes version 2 only`);
  }
  const text = canonicalJson(resultDocument(event));
  return `sha256:${createHash("sha256").update(text, "utf8").digest("hex")}`;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    const event = JSON.parse(readFileSync(0, "utf8"));
    const hash = resultHash(event);
    console.log(hash);
    process.exit(hash === event.result_hash ? 0 : 1);
  } catch (err) {
    console.error(`error: ${err.message}`);
    process.exit(2);
  }
}
