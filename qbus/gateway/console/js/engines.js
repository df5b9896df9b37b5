// The engines page: GET /v1/engines — capabilities, queue depth and cost model per engine.

import { getJson } from "./api.js";
import { h, kv } from "./dom.js";

function costList(cost) {
  if (!cost || typeof cost !== "object" || !Object.keys(cost).length) return "—";
  return kv(Object.entries(cost).map(([key, value]) => [key,
    typeof value === "number" ? String(Number(value.toPrecision(4))) : JSON.stringify(value)]));
}

function maxQubits(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return Object.entries(value).map(([m, n]) => `${m}: ${n}`).join(", ");
  return String(value);
}

export async function enginesView(main) {
  const { engines } = await getJson("/v1/engines");
  const body = h("tbody", {}, engines.map((engine) => h("tr", { "data-engine": engine.name },
    h("th", { scope: "row", class: "mono" }, engine.name),
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
