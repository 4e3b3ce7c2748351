// The page's entry point: hash routes to the list (#/?page=2&order=asc&status=done) and to
// one run (#/calculations/42), each with an address of its own that can be shared or bookmarked.

import { setToken, whenUnauthorized } from "./api.js";
import { byId, setText, show } from "./dom.js";
import { setUpForm } from "./form.js";
import { createRunView } from "./run.js";
import { DEFAULT_STATE, createRunList, listHash, parseListState } from "./runs.js";

const RUN_ROUTE = /^#\/calculations\/(\d{1,18})$/;
const LIST_ROUTE = /^(?:#\/?)?(?:\?(.*))?$/;

const runs = createRunList((state) => goToList(state));
const runView = createRunView();
let lastListHash = "#/";
let firstRoute = true;

function goToList(state) {
  const hash = listHash(state);
  if (location.hash === hash) runs.load(state);
  else location.hash = hash;
}

function showView(name) {
  for (const view of ["home-view", "run-view", "missing-view"]) show(byId(view), view === name);
}

function focusHeading(id) {
  // On a route change, not on the first load: keyboard and screen reader users land on the
  // new content instead of at the top of a page they have not asked to re-read.
  if (!firstRoute) byId(id).focus({ preventScroll: false });
}

function route() {
  const hash = location.hash;
  const run = RUN_ROUTE.exec(hash);
  const list = run ? null : LIST_ROUTE.exec(hash);
  if (run) {
    runs.stop();
    byId("run-back").href = lastListHash;
    showView("run-view");
    runView.load(run[1]);
    focusHeading("run-title");
  } else if (list) {
    runView.stop();
    lastListHash = hash || "#/";
    document.title = "Calculations";
    const wasShown = !byId("home-view").hidden;
    showView("home-view");
    runs.load(parseListState(list[1] ?? ""));
    if (!wasShown) focusHeading("new-run-title");
  } else {
    runs.stop();
    runView.stop();
    document.title = "No such page · Calculations";
    showView("missing-view");
    focusHeading("missing-title");
  }
  firstRoute = false;
}

byId("filter-status").addEventListener("change", (event) => {
  goToList({ ...runs.state(), status: event.target.value, page: 1 });
});
byId("filter-order").addEventListener("change", (event) => {
  goToList({ ...runs.state(), order: event.target.value, page: 1 });
});
byId("page-prev").addEventListener("click", () => {
  goToList({ ...runs.state(), page: Math.max(1, runs.state().page - 1) });
});
byId("page-next").addEventListener("click", () => {
  goToList({ ...runs.state(), page: runs.state().page + 1 });
});

// A new run is shown where it lands: on the first page, newest first, whatever the filter.
setUpForm(() => goToList({ ...DEFAULT_STATE }));

// Asked for when the API refuses a request for want of the token, then everything reloads.
const tokenForm = byId("token-form");
let tokenGiven = false;
whenUnauthorized(() => {
  if (!tokenForm.hidden) return;
  if (tokenGiven) setText(byId("token-note"), "The server refused that token. Try again.");
  show(tokenForm, true);
  byId("api-token").focus();
});
tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = byId("api-token").value.trim();
  if (!value) return;
  setToken(value);
  tokenGiven = true;
  show(tokenForm, false);
  route();
  document.querySelector("main > :not([hidden]) h1")?.focus();
});

window.addEventListener("hashchange", route);
route();
