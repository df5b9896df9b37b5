// The console's entry point: the token field and hash routing between the four views.
// Each view gets a `cleanup(fn)` to register what closes its live streams when the
// route changes.

import { clearError, showError } from "./alert.js";
import { getToken, setToken } from "./api.js";
import { enginesView } from "./engines.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { submitView } from "./submit.js";

const main = document.getElementById("app");
let closers = [];

function route() {
  const path = location.hash.replace(/^#\/?/, "") || "jobs";
  const [name, ...rest] = path.split("/");
  if (name === "jobs" && rest.length) return { name: "job", view: jobView, args: [decodeURIComponent(rest.join("/"))] };
  const views = { jobs: jobsView, engines: enginesView, submit: submitView };
  return { name, view: views[name] ?? jobsView, args: [] };
}

async function render() {
  for (const close of closers) close();
  closers = [];
  clearError();
  const { name, view, args } = route();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.route === (name === "job" ? "jobs" : name)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const cleanup = (fn) => { if (fn) closers.push(fn); };
  try {
    await view(main, cleanup, ...args);
  } catch (error) {
    showError(error);
  }
}

const tokenInput = document.getElementById("token");
const tokenState = document.getElementById("token-state");
tokenInput.value = getToken();
tokenState.textContent = getToken() ? "token set" : "";
document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken(tokenInput.value.trim());
  tokenState.textContent = getToken() ? "token saved" : "token cleared";
  render();
});
window.addEventListener("hashchange", render);
render();
