// The submit form: paste a program (or pick a template from GET /v1/templates), POST it
// to /v1/jobs as text with the options as query parameters, then follow the job live.

import { clearError, showError } from "./alert.js";
import { getJson, submitProgram } from "./api.js";
import { h } from "./dom.js";
import { jobPanel } from "./job.js";

const FORMATS = ["auto", "qasm2", "qasm3", "json", "quil"];

export async function submitView(main, cleanup) {
  const [templates, engines] = await Promise.all([
    getJson("/v1/templates").then((body) => body.templates ?? []),
    getJson("/v1/engines").then((body) => body.engines ?? []),
  ]);
  const byName = new Map(templates.map((t) => [t.name, t]));
  const source = h("textarea", { id: "program", name: "program", required: true, spellcheck: "false" });
  const format = h("select", { id: "format", name: "format" }, FORMATS.map((f) => h("option", { value: f }, f)));
  const template = h("select", { id: "template", name: "template" },
    h("option", { value: "" }, "— paste your own —"),
    templates.map((t) => h("option", { value: t.name }, `${t.name}: ${t.description ?? ""}`)));
  template.addEventListener("change", () => {
    const picked = byName.get(template.value);
    if (!picked) return;
    source.value = picked.source;
    format.value = FORMATS.includes(picked.format) ? picked.format : "auto";
  });
  const shots = h("input", { id: "shots", name: "shots", type: "number", min: 1, value: 1024, required: true });
  const engine = h("select", { id: "engine", name: "engine" }, h("option", { value: "auto" }, "auto (the router picks)"),
    engines.map((e) => h("option", { value: e.name }, e.deployed === false ? `${e.name} (not deployed)` : e.name)));
  const button = h("button", { type: "submit" }, "Submit job");
  const result = h("div", { id: "submitted", "aria-live": "polite" });
  const form = h("form", { class: "submit", "aria-labelledby": "submit-h" },
    h("label", { for: "template" }, "Template", template),
    h("label", { for: "program" }, "Program (OpenQASM 2/3, JSON IR or Quil)", source),
    h("div", { class: "row" },
      h("label", { for: "format" }, "Format", format),
      h("label", { for: "shots" }, "Shots", shots),
      h("label", { for: "engine" }, "Engine", engine),
      button));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    clearError();
    result.replaceChildren();
    try {
      const accepted = await submitProgram(source.value, { shots: shots.value, engine: engine.value, format: format.value });
      await jobPanel(result, accepted.job_id, cleanup, "h2");
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(h("h1", { id: "submit-h" }, "Submit a job"), h("section", { class: "panel" }, form), result);
}
