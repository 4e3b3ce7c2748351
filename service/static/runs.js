// The list of runs: a page of 10, by launch date either way, one status or all. It refreshes
// itself while a run on the page is queued or running, updating rows in place.

import { ACTIVE, describe, listRuns } from "./api.js";
import { byId, h, renderBadge, setText, show } from "./dom.js";
import { formatCount, formatTimestamp } from "./format.js";

export const POLL_MS = 1000;
export const DEFAULT_STATE = Object.freeze({ page: 1, order: "desc", status: "" });

export function parseListState(query) {
  const params = new URLSearchParams(query);
  const page = Number.parseInt(params.get("page") ?? "", 10);
  return {
    page: Number.isInteger(page) && page > 0 ? page : 1,
    order: params.get("order") === "asc" ? "asc" : "desc",
    status: params.get("status") ?? "",
  };
}

export function listHash(state) {
  const params = new URLSearchParams();
  if (state.page !== 1) params.set("page", String(state.page));
  if (state.order !== "desc") params.set("order", state.order);
  if (state.status) params.set("status", state.status);
  const query = params.toString();
  return query ? `#/?${query}` : "#/";
}

function makeRow(item) {
  const link = h("a", { class: "run-link", href: `#/calculations/${item.id}` });
  const cells = [
    h("td", {}, link, h("span", { class: "run-id" }, `#${item.id}`)),
    h("td", {}, h("time")),
    h("td", {}, h("span", { class: "badge" })),
  ];
  return h("tr", { "data-id": item.id }, ...cells);
}

function updateRow(row, item) {
  const [runCell, timeCell, statusCell] = row.cells;
  setText(runCell.querySelector("a"), item.name);
  const time = timeCell.querySelector("time");
  if (time.dateTime !== item.created_at) {
    time.dateTime = item.created_at;
    time.title = item.created_at;
  }
  setText(time, formatTimestamp(item.created_at));
  renderBadge(statusCell.querySelector(".badge"), item.status);
  row.dataset.status = item.status;
}

/** Rows are kept by id and moved, never rebuilt: nothing flickers and focus stays put. */
function renderRows(body, items) {
  const old = new Map([...body.rows].map((row) => [row.dataset.id, row]));
  let previous = null;
  for (const item of items) {
    let row = old.get(String(item.id));
    if (row === undefined) row = makeRow(item);
    else old.delete(String(item.id));
    updateRow(row, item);
    const here = previous === null ? body.firstElementChild : previous.nextElementSibling;
    if (row !== here) body.insertBefore(row, here);
    previous = row;
  }
  for (const row of old.values()) row.remove();
}

/** onPageOutOfRange(state) asks for another page when a filter left this one empty. */
export function createRunList(onPageOutOfRange) {
  const table = byId("runs-table");
  const body = byId("runs-body");
  const empty = byId("runs-empty");
  const errorBox = byId("runs-error");
  const live = byId("runs-live");
  const prev = byId("page-prev");
  const next = byId("page-next");
  const info = byId("page-info");
  let state = { ...DEFAULT_STATE };
  let generation = 0; // answers to an older request are dropped
  let timer = null;

  function stop() {
    clearTimeout(timer);
    timer = null;
    generation += 1;
    table.dataset.polling = "false";
    table.removeAttribute("aria-busy");
    show(live, false);
  }

  function render(page) {
    renderRows(body, page.items);
    show(table, page.items.length > 0);
    setText(
      empty,
      state.status ? `No ${state.status} runs.` : "No runs yet: launch one with the form.",
    );
    show(empty, page.items.length === 0);
    const pages = Math.max(page.pages, 1);
    const runs = page.total === 1 ? "1 run" : `${formatCount(page.total)} runs`;
    setText(info, `Page ${page.page} of ${pages} · ${runs}`);
    prev.disabled = page.page <= 1;
    next.disabled = page.page >= pages;
  }

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    const mine = ++generation;
    table.setAttribute("aria-busy", "true");
    let polling = table.dataset.polling === "true";
    try {
      const page = await listRuns(state);
      if (mine !== generation) return;
      if (page.items.length === 0 && page.pages > 0 && state.page > page.pages) {
        onPageOutOfRange({ ...state, page: page.pages });
        return;
      }
      show(errorBox, false);
      render(page);
      polling = page.items.some((item) => ACTIVE.has(item.status));
    } catch (error) {
      if (mine !== generation) return;
      setText(errorBox, `Could not load the runs: ${describe(error)}`);
      show(errorBox, true);
      if (error.status === 401) polling = false; // until a token is given
    } finally {
      if (mine === generation) table.removeAttribute("aria-busy");
    }
    table.dataset.polling = String(polling);
    show(live, polling);
    // After an error, polling goes on only if it was on: a passing outage heals by itself.
    if (polling) timer = setTimeout(refresh, POLL_MS);
  }

  /** Shows the list as asked by the address, fetching it now. */
  function load(newState) {
    state = { ...newState };
    byId("filter-status").value = state.status;
    byId("filter-order").value = state.order;
    byId("runs-launched").setAttribute(
      "aria-sort",
      state.order === "asc" ? "ascending" : "descending",
    );
    return refresh();
  }

  return { load, refresh, stop, state: () => ({ ...state }) };
}
