// The engines page: GET /v1/engines — capabilities, queue depth and cost model per engine.

import { getJson } from "./api.js";
import { h, kv } from "./dom.js";

function num(value) {
  return typeof value === "number" ? String(Number(value.toPrecision(3))) : JSON.stringify(value);
}

// The router's cost-model row: per method, one coefficient per feature (docs/routing.md);
// anything else the gateway sends is listed as it is.
function costList(cost) {
  if (!cost || typeof cost !== "object" || !Object.keys(cost).length) return "—";
  const { features, coefficients, calibrated, measured, ...rest } = cost;
  const parts = [];
  if (Array.isArray(features) && coefficients && typeof coefficients === "object") {
    parts.push(h("table", { class: "cost" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "method"), features.map((f) => h("th", { scope: "col" }, f)))),
      h("tbody", {}, Object.entries(coefficients).map(([method, row]) => h("tr", {},
        h("th", { scope: "row" }, method), (Array.isArray(row) ? row : [row]).map((c) => h("td", {}, num(c))))))));
  }
  if (calibrated !== undefined) {
    parts.push(h("p", { class: "muted" }, calibrated ? `calibrated${measured ? ` ${measured}` : ""}` : "not calibrated: the fallback row"));
  }
  if (Object.keys(rest).length) parts.push(kv(Object.entries(rest).map(([key, value]) => [key, num(value)])));
  return parts;
}

function maxQubits(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") {
    return Object.entries(value).map(([m, n]) => `${m}: ${n}`).join(", ") || "— (not deployed: not loaded)";
  }
  return String(value);
}

export async function enginesView(main) {
  const { engines } = await getJson("/v1/engines");
  const body = h("tbody", {}, engines.map((engine) => h("tr", { "data-engine": engine.name },
    h("th", { scope: "row" }, h("span", { class: "mono" }, engine.name),
      engine.version ? h("span", { class: "muted" }, ` ${engine.version}`) : null,
      engine.error ? h("p", { class: "state-failed" }, engine.error) : null),
    h("td", {}, engine.deployed ? "yes" : "no"),
    h("td", {}, (engine.methods ?? []).join(", ")),
    h("td", {}, maxQubits(engine.max_qubits)),
    h("td", { class: "queue" }, engine.queue_depth ?? "—"),
    h("td", {}, costList(engine.cost)))));
  main.replaceChildren(h("h1", {}, "Engines"), h("section", { class: "panel" },
    h("table", {},
      h("caption", { class: "muted" }, `${engines.length} engines installed`),
      h("thead", {}, h("tr", {}, ["Engine", "Deployed", "Methods", "Max qubits", "Queue depth", "Cost model"]
        .map((name) => h("th", { scope: "col" }, name)))),
      body)));
}
