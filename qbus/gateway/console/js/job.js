// One job: its events (GET /v1/jobs/{id}/events, then the same as SSE while it runs)
// drawn as the per-stage timeline, the counts histogram, the circuit, the verification
// verdict, result hash, Merkle proof / anchor transaction and trace id.

import { EVENT_TYPES, FINAL_TYPES, getJson, stream } from "./api.js";
import { h, kv, mono } from "./dom.js";
import { circuit, histogram, spanBar } from "./svg.js";

// The stage whose work ends with each event (docs/architecture.md's pipeline).
const STAGE = {
  "job.submitted": "submitted",
  "circuit.ingested": "ingest",
  "circuit.rewritten": "optimize",
  "execution.requested": "route",
  "execution.completed": "execute",
  "execution.failed": "execute (failed)",
  "job.completed": "verify",
  "job.failed": "failed",
  "job.rejected": "rejected",
  "result.anchored": "anchor",
  "control.reroute": "reroute",
  "control.cancel": "cancel",
  "control.rejected": "control refused",
  "dead.letter": "dead letter",
};

function seconds(item) {
  const ts = item.event?.timestamp;
  if (typeof ts === "number") return ts;
  const parsed = Date.parse(item.time ?? "");
  return Number.isNaN(parsed) ? 0 : parsed / 1000;
}

function duration(s) {
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(1)} ms`;
  return `${s.toFixed(2)} s`;
}

function find(items, type) {
  return items.find((item) => item.type === type)?.event;
}

function traceOf(items) {
  for (const item of items) {
    const trace = item.traceparent ?? item.headers?.traceparent;
    if (trace) return trace;
  }
  return null;
}

// Each row's duration is the time since the previous event: the work of the stage that
// wrote this one. The first row has none (the submission itself is not in the job's log).
function timeline(items) {
  if (!items.length) return h("p", { class: "muted" }, "No events yet.");
  const start = seconds(items[0]);
  const span = Math.max(1e-6, seconds(items[items.length - 1]) - start);
  let previous = start;
  return h("ol", { class: "timeline", "aria-label": "Stages" }, items.map((item) => {
    const at = seconds(item);
    const took = Math.max(0, at - previous);
    const li = h("li", { "data-type": item.type, "data-stage": STAGE[item.type] ?? item.type },
      h("span", {}, h("strong", {}, STAGE[item.type] ?? item.type), " ", h("span", { class: "muted mono" }, item.type)),
      h("span", { class: "dur", title: `${(at - start).toFixed(6)} s after submission` }, item === items[0] ? "start" : duration(took)),
      spanBar(previous - start, at - start, span));
    previous = at;
    return li;
  }));
}

function verdict(verification) {
  if (!verification) return "—";
  // The verifier's detail already names the statistic and p-value; the verdict leads.
  return h("span", {},
    h("span", { class: `verdict verdict-${verification.verdict}` },
      verification.test ? `${verification.verdict} (${verification.test})` : verification.verdict),
    verification.detail ? h("span", { class: "muted" }, ` — ${verification.detail}`) : null);
}

function resultSection(final) {
  if (!final) return h("p", { class: "muted" }, "Running…");
  if (final.type !== "job.completed") {
    return h("div", {}, kv([["Outcome", h("span", { class: `state state-${final.type.slice(4)}` }, final.type)],
      ["Code", mono(final.code ?? "")], ["Stage", final.stage], ["Where", final.where], ["Message", final.message]]));
  }
  const parts = [kv([
    ["Engine", `${final.engine} ${final.engine_version ?? ""}`.trim()],
    ["Method", final.method], ["Shots", final.shots],
    ["Verification", verdict(final.verification)],
    ["Result hash", final.result_hash ? mono(final.result_hash) : null],
    ["Cached", final.cached ? `yes${final.cached_from ? ` (from ${final.cached_from})` : ""}` : "no"],
  ])];
  if (final.counts) {
    parts.push(h("h3", {}, "Counts"), histogram(final.counts, final.shots));
  }
  if (final.expectations) parts.push(h("h3", {}, "Expectation values"), h("pre", {}, JSON.stringify(final.expectations)));
  return h("div", {}, parts);
}

function provenance(items) {
  const anchor = find(items, "result.anchored");
  const pairs = [["Trace (traceparent)", traceOf(items) ? mono(traceOf(items)) : null]];
  if (anchor) {
    // data-anchor names each value, so a reader (or the browser test) can check the
    // proof against the contract without parsing the labels.
    const value = (field, text, tag = "code") => h(tag, { "data-anchor": field }, text);
    pairs.push(["Merkle root", value("root", anchor.root)],
      ["Leaf", h("span", {}, value("leaf_index", anchor.leaf_index, "span"), ` of ${anchor.batch_size} in batch `,
        value("batch_id", anchor.batch_id, "span"))],
      ["Proof", h("ol", {}, (anchor.proof ?? []).map((node) => h("li", {}, value("proof", node))))],
      ["Anchor transaction", value("tx_hash", anchor.tx_hash)], ["Block", anchor.block_number],
      ["Chain", anchor.chain_id], ["Contract", value("contract", anchor.contract)]);
  } else {
    pairs.push(["Anchor", "not anchored (yet): no result.anchored event for this job; reload to look again"]);
  }
  return kv(pairs);
}

function circuitSection(items) {
  const ingested = find(items, "circuit.ingested");
  const submitted = find(items, "job.submitted");
  const ir = ingested?.circuit ?? submitted?.circuit;
  if (ir) {
    const stats = ingested?.stats;
    return h("div", {},
      stats ? h("p", { class: "muted" }, `${ir.num_qubits} qubits, ${stats.gates} gates (${stats.two_qubit_gates} two-qubit), depth ${stats.depth}`) : null,
      circuit(ir));
  }
  if (submitted?.source) return h("pre", { class: "scroll" }, submitted.source);
  return h("p", { class: "muted" }, "Not parsed yet.");
}

/** Render job `id` into `container`, following it live until its final event. */
export async function jobPanel(container, id, cleanup, headingLevel = "h1") {
  const items = [];
  const seen = new Set();
  const status = h("p", { class: "live", role: "status", "aria-live": "polite" }, "loading…");
  const sections = {
    timeline: h("div", {}), result: h("div", {}), circuit: h("div", {}), provenance: h("div", {}),
  };
  const sub = headingLevel === "h1" ? "h2" : "h3";
  const article = h("article", { class: "job", "data-job": id, "data-state": "loading" },
    h(headingLevel, {}, "Job ", mono(id)), status,
    h("section", { class: "panel", "aria-labelledby": `${id}-tl` }, h(sub, { id: `${id}-tl` }, "Timeline"), sections.timeline),
    h("section", { class: "panel", "aria-labelledby": `${id}-res` }, h(sub, { id: `${id}-res` }, "Result"), sections.result),
    h("section", { class: "panel", "aria-labelledby": `${id}-circ` }, h(sub, { id: `${id}-circ` }, "Circuit"), sections.circuit),
    h("section", { class: "panel", "aria-labelledby": `${id}-prov` }, h(sub, { id: `${id}-prov` }, "Provenance"), sections.provenance));
  container.replaceChildren(article);
  const final = () => items.find((item) => FINAL_TYPES.includes(item.type))?.event ?? null;
  const render = () => {
    items.sort((a, b) => a.sequence - b.sequence);
    sections.timeline.replaceChildren(timeline(items));
    sections.result.replaceChildren(resultSection(final()));
    sections.circuit.replaceChildren(circuitSection(items));
    sections.provenance.replaceChildren(provenance(items));
    const done = final();
    article.dataset.state = done ? done.type : "running";
    status.textContent = done ? `finished: ${done.type}` : "running — events stream in live";
  };
  const add = (item) => {
    if (seen.has(item.sequence)) return; // a reconnected stream replays from the first
    seen.add(item.sequence);
    items.push(item);
  };
  const { events } = await getJson(`/v1/jobs/${encodeURIComponent(id)}/events`);
  events.forEach(add);
  render();
  if (final()) return;
  let close = null;
  close = stream(`/v1/jobs/${encodeURIComponent(id)}/events`, EVENT_TYPES, (item) => {
    add(item);
    render();
    if (final()) close?.(); // the stream ends at the final event; do not reconnect
  });
  cleanup(close);
}

export async function jobView(main, cleanup, id) {
  await jobPanel(main, id, cleanup);
}
