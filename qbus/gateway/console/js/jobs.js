// The job list: GET /v1/jobs once, then every final event from the SSE /v1/results
// updates (or adds) its job's row live.

import { FINAL_TYPES, getJson, stream } from "./api.js";
import { h } from "./dom.js";

function stateName(state) {
  if (typeof state === "string") return state;
  return state?.state ?? state?.stage ?? "";
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

function row(job) {
  const state = stateName(job.state);
  return h("tr", { "data-job": job.job_id },
    h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}`, class: "mono" }, job.job_id)),
    h("td", { class: `state state-${state.replace(/^job\./, "")}` }, state),
    h("td", {}, job.engine ?? ""),
    h("td", {}, when(job.updated)));
}

export async function jobsView(main, cleanup) {
  const live = h("p", { class: "live", role: "status", "aria-live": "polite" }, "connecting…");
  const body = h("tbody", {});
  const table = h("table", { "aria-describedby": "jobs-caption" },
    h("caption", { id: "jobs-caption", class: "muted" }, "Most recent jobs first; final events arrive live."),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Job"), h("th", { scope: "col" }, "State"),
      h("th", { scope: "col" }, "Engine"), h("th", { scope: "col" }, "Updated"))),
    body);
  main.replaceChildren(h("h1", {}, "Jobs"), live, h("section", { class: "panel" }, table));
  const rows = new Map();
  const put = (job, atTop) => {
    const fresh = row(job);
    const old = rows.get(job.job_id);
    if (old) old.replaceWith(fresh);
    else if (atTop) body.prepend(fresh);
    else body.append(fresh);
    rows.set(job.job_id, fresh);
  };
  const { jobs } = await getJson("/v1/jobs?limit=50");
  for (const job of jobs) put(job, false);
  if (!jobs.length) body.append(h("tr", { class: "empty" }, h("td", { colspan: 4, class: "muted" }, "No jobs yet.")));
  cleanup(stream("/v1/results", FINAL_TYPES, (item) => {
    body.querySelector("tr.empty")?.remove();
    const event = item.event ?? {};
    put({ job_id: event.job_id, state: item.type.replace(/^job\./, ""), engine: event.engine ?? "", updated: item.time }, true);
  }, (state) => { live.textContent = state === "live" ? "live: final events stream in" : state; }));
}
