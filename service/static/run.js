// One run's page: its parameters and status, watched until it ends; then its result as a
// chart, the first rows and a CSV download.

import {
  ACTIVE,
  cancelRun,
  csvUrl,
  deleteRun,
  describe,
  downloadCsv,
  getRun,
  needsFetchForFiles,
} from "./api.js";
import { createChart } from "./chart.js";
import { byId, h, renderBadge, setText, show } from "./dom.js";
import { formatCount, formatDuration, formatTimestamp, formatValue } from "./format.js";
import { POLL_MS } from "./runs.js";

export const TABLE_ROWS = 20;
const COLUMNS = ["date", "liquid", "oil", "water", "wct"];
const PROGRESS = {
  queued: "This run waits for a free kernel; this page updates by itself.",
  running: "This run is being computed; this page updates by itself.",
  cancelled: "This run was cancelled: it has no result.",
};

function setTime(id, iso) {
  const node = byId(id);
  const time = iso ? h("time", { datetime: iso, title: iso }, formatTimestamp(iso)) : "—";
  node.replaceChildren(time);
}

function renderFacts(run) {
  setTime("fact-created", run.created_at);
  setTime("fact-started", run.started_at);
  setTime("fact-finished", run.finished_at);
  setText(byId("fact-duration"), formatDuration(run.duration));
  setText(byId("fact-date-start"), run.date_start ?? "—");
  setText(byId("fact-date-fin"), run.date_fin ?? "—");
  setText(byId("fact-lag"), run.lag === 1 ? "1 day" : `${run.lag} days`);
  setText(byId("fact-seed"), run.seed ?? "—");
}

function decimals(value) {
  const text = String(value);
  return text.includes("e") ? null : (text.split(".")[1] ?? "").length;
}

/** Each column with as many decimals as its longest value: aligned, and nothing rounded. */
function columnFormats(rows) {
  return COLUMNS.slice(1).map((key) => {
    const places = rows.map((row) => (row[key] === null ? 0 : decimals(row[key])));
    if (places.includes(null)) return formatValue;
    const most = Math.max(0, ...places);
    return (value) => (value === null ? formatValue(value) : value.toFixed(most));
  });
}

function renderRows(rows) {
  const shown = rows.slice(0, TABLE_ROWS);
  const formats = columnFormats(shown);
  byId("rows-body").replaceChildren(
    ...shown.map((row) =>
      h(
        "tr",
        {},
        h("th", { scope: "row" }, row.date),
        ...formats.map((format, i) => h("td", { class: "num" }, format(row[COLUMNS[i + 1]]))),
      ),
    ),
  );
  const note = byId("rows-note");
  note.dataset.rows = String(rows.length);
  note.dataset.shown = String(shown.length);
  setText(
    note,
    rows.length <= TABLE_ROWS
      ? `All ${formatCount(rows.length)} rows.`
      : `The first ${shown.length} of ${formatCount(rows.length)} rows; the CSV has them all.`,
  );
}

export function createRunView() {
  const cancelButton = byId("run-cancel");
  const cancelError = byId("run-cancel-error");
  const deleteButton = byId("run-delete");
  const deleteError = byId("run-delete-error");
  let id = null;
  let generation = 0;
  let timer = null;
  let chart = null;

  function reset() {
    clearTimeout(timer);
    timer = null;
    generation += 1;
    chart?.destroy();
    chart = null;
    show(byId("result"), false);
  }

  function renderResult(run) {
    const section = byId("result");
    show(section, true);
    byId("csv-link").href = csvUrl(run.id);
    chart = createChart(byId("chart"), run.result);
    renderRows(run.result);
  }

  function render(run) {
    const title = run.name ?? `Run #${run.id}`;
    setText(byId("run-title"), title);
    document.title = `${title} · Calculations`;
    setText(byId("run-id"), `Run #${run.id}`);
    renderBadge(byId("run-badge"), run.status);
    renderFacts(run);
    setText(byId("run-progress"), PROGRESS[run.status] ?? "");
    show(byId("run-failure"), run.status === "failed");
    setText(byId("run-error"), run.error ?? "");
    show(byId("run-cancel-box"), ACTIVE.has(run.status));
    show(deleteButton, true);
    if (run.status === "done" && Array.isArray(run.result) && chart === null) renderResult(run);
  }

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    const mine = ++generation;
    const view = byId("run-view");
    let active = view.dataset.polling === "true";
    try {
      const run = await getRun(id);
      if (mine !== generation) return;
      show(byId("run-load-error"), false);
      render(run);
      active = ACTIVE.has(run.status);
    } catch (error) {
      if (mine !== generation) return;
      const box = byId("run-load-error");
      setText(box, error.status === 404 ? `Run #${id} does not exist.` : describe(error));
      show(box, true);
      if (error.status === 404 || error.status === 401) active = false;
    }
    view.dataset.polling = String(active);
    if (active) timer = setTimeout(refresh, POLL_MS);
  }

  // A link cannot carry the API token: with one, the file comes through fetch() instead.
  byId("csv-link").addEventListener("click", async (event) => {
    if (!needsFetchForFiles()) return;
    event.preventDefault();
    try {
      await downloadCsv(id);
    } catch (error) {
      setText(byId("run-load-error"), `Could not download the CSV: ${describe(error)}`);
      show(byId("run-load-error"), true);
    }
  });

  cancelButton.addEventListener("click", async () => {
    cancelButton.disabled = true;
    show(cancelError, false);
    const target = id;
    try {
      await cancelRun(target);
    } catch (error) {
      if (target !== id) return;
      setText(cancelError, `Could not cancel: ${describe(error)}`);
      show(cancelError, true);
    } finally {
      cancelButton.disabled = false;
    }
    if (target === id) await refresh();
  });

  // Asked first: a deleted run, its result and its CSV cannot be brought back.
  deleteButton.addEventListener("click", async () => {
    const target = id;
    const question = `Delete run #${target}? Its result and CSV are deleted with it; this cannot be undone.`;
    if (!window.confirm(question)) return;
    deleteButton.disabled = true;
    show(deleteError, false);
    try {
      await deleteRun(target);
      if (target === id) window.location.hash = "#/";
    } catch (error) {
      if (target !== id) return;
      setText(deleteError, `Could not delete: ${describe(error)}`);
      show(deleteError, true);
    } finally {
      deleteButton.disabled = false;
    }
  });

  /** Shows run `newId`, fetching it now and again while it is queued or running. */
  function load(newId) {
    if (newId !== id) {
      reset();
      id = newId;
      setText(byId("run-title"), `Run #${id}`);
      setText(byId("run-id"), "");
      byId("run-badge").replaceChildren();
      byId("run-badge").className = "badge";
      show(byId("run-failure"), false);
      show(byId("run-cancel-box"), false);
      show(cancelError, false);
      show(deleteButton, false);
      show(deleteError, false);
      show(byId("run-load-error"), false);
      setText(byId("run-progress"), "");
      byId("run-view").dataset.polling = "false";
    }
    return refresh();
  }

  function stop() {
    clearTimeout(timer);
    timer = null;
    generation += 1;
    byId("run-view").dataset.polling = "false";
  }

  return { load, stop };
}
