// The production chart, drawn in SVG: liquid, oil and water over date on the left axis, water
// cut (0..1) on the right one. Large results are thinned for drawing only (series.js); the
// pointer and the arrow keys always read exact rows.

import { h, svg } from "./dom.js";
import { dayNumber, formatCount, formatTick, formatValue } from "./format.js";
import {
  MAX_DRAWN,
  SERIES,
  countPoints,
  highestRate,
  nearest,
  pickIndices,
  sliceSize,
} from "./series.js";
import { dateTicks, numberTicks } from "./ticks.js";

const MARKERS_UP_TO = 60; // rows few enough for each point to get a dot
const WCT_TICKS = [0, 0.25, 0.5, 0.75, 1];

/** Sizes and scales for a chart `width` pixels wide, over days x0..x1. */
function layout(width, rateTop, x0, x1) {
  const narrow = width < 480;
  const height = Math.round(Math.min(380, Math.max(240, width * 0.5)));
  const left = narrow ? 44 : 60;
  const right = width - (narrow ? 40 : 56);
  const top = 14;
  const bottom = height - 30;
  const rateTicks = numberTicks(rateTop, Math.max(2, Math.floor((bottom - top) / 55)));
  const rateMax = rateTicks.at(-1);
  return {
    width,
    height,
    left,
    right,
    top,
    bottom,
    rateTicks,
    x: (day) => left + ((day - x0) / (x1 - x0)) * (right - left),
    day: (px) => x0 + ((px - left) / (right - left)) * (x1 - x0),
    y: {
      rate: (value) => bottom - (value / rateMax) * (bottom - top),
      wct: (value) => bottom - value * (bottom - top),
    },
  };
}

function caption(rowCount, points) {
  if (points >= rowCount) return `All ${formatCount(rowCount)} rows are plotted.`;
  return (
    `${formatCount(rowCount)} rows: each line is drawn through at most ${formatCount(points)}` +
    ` points, the lowest and highest of every ${sliceSize(rowCount)} rows, so no peak is lost.` +
    " Hover or use the arrow keys for exact rows."
  );
}

function axes(geo, x0, x1) {
  const { left, right, top, bottom, width } = geo;
  const middle = (top + bottom) / 2;
  const group = svg("g", { class: "axes" });
  for (const tick of geo.rateTicks) {
    const y = geo.y.rate(tick);
    group.append(
      svg("line", { x1: left, x2: right, y1: y, y2: y, class: "grid" }),
      svg("text", { x: left - 6, y, dy: "0.32em", class: "tick", "text-anchor": "end" },
        formatTick(tick)),
    );
  }
  for (const tick of WCT_TICKS) {
    const y = geo.y.wct(tick);
    group.append(svg("text", { x: right + 6, y, dy: "0.32em", class: "tick" }, formatTick(tick)));
  }
  for (const tick of dateTicks(x0, x1, Math.max(2, Math.floor((right - left) / 90)))) {
    const at = geo.x(tick.value);
    const anchor = at - left < 30 ? "start" : right - at < 30 ? "end" : "middle";
    group.append(
      svg("line", { x1: at, x2: at, y1: bottom, y2: bottom + 5, class: "axis" }),
      svg("text", { x: at, y: bottom + 18, class: "tick", "text-anchor": anchor }, tick.label),
    );
  }
  group.append(
    svg("line", { x1: left, x2: right, y1: bottom, y2: bottom, class: "axis" }),
    svg("line", { x1: left, x2: left, y1: top, y2: bottom, class: "axis" }),
    svg("line", { x1: right, x2: right, y1: top, y2: bottom, class: "axis" }),
    svg("text", { class: "axis-title", "text-anchor": "middle",
      transform: `translate(12 ${middle}) rotate(-90)` }, "Rate"),
    svg("text", { class: "axis-title", "text-anchor": "middle",
      transform: `translate(${width - 8} ${middle}) rotate(90)` }, "Water cut"),
  );
  return group;
}

/** One line; its path's M and L commands are exactly its points (`data-points`). */
function drawLine(line, geo, days, rows) {
  const y = geo.y[line.axis];
  let d = "";
  let penDown = false;
  for (const i of line.indices) {
    if (i < 0) {
      penDown = false;
      continue;
    }
    d += `${penDown ? "L" : "M"}${geo.x(days[i]).toFixed(1)},${y(rows[i][line.key]).toFixed(1)}`;
    penDown = true;
  }
  const group = svg("g", { class: "series" });
  group.append(svg("path", {
    d,
    fill: "none",
    stroke: line.color,
    "stroke-width": 2,
    "stroke-linejoin": "round",
    "stroke-dasharray": line.dash ?? null,
    "data-series": line.key,
    "data-points": countPoints(line.indices),
  }));
  if (rows.length <= MARKERS_UP_TO) {
    for (const i of line.indices) {
      if (i < 0) continue;
      const cx = geo.x(days[i]).toFixed(1);
      const cy = y(rows[i][line.key]).toFixed(1);
      group.append(svg("circle", { cx, cy, r: 2.5, fill: line.color }));
    }
  }
  return group;
}

function legendButton(series, onToggle) {
  const swatch = svg(
    "svg",
    { width: 28, height: 10, "aria-hidden": "true" },
    svg("line", { x1: 1, y1: 5, x2: 27, y2: 5, stroke: series.color, "stroke-width": 3,
      "stroke-dasharray": series.dash ?? null }),
  );
  const label = series.axis === "wct" ? `${series.label} (right axis)` : series.label;
  const button = h("button", { type: "button", class: "legend-item", "aria-pressed": "true" },
    swatch, label);
  button.addEventListener("click", () => {
    const shown = button.getAttribute("aria-pressed") !== "true";
    button.setAttribute("aria-pressed", String(shown));
    onToggle(series.key, shown);
  });
  return button;
}

/** Draws the chart into `figure` and keeps it fitted to its width; destroy() removes it. */
export function createChart(figure, rows) {
  const days = rows.map((row) => dayNumber(row.date));
  const lines = SERIES.map((s) => ({ ...s, indices: pickIndices(rows, s.key, MAX_DRAWN) }));
  const points = Math.max(...lines.map((line) => countPoints(line.indices)));
  const rateTop = highestRate(rows);
  // One row still needs a span of days to be drawn across.
  const [x0, x1] = days[0] === days.at(-1) ? [days[0] - 1, days[0] + 1] : [days[0], days.at(-1)];
  const period = `${rows[0].date} to ${rows.at(-1).date}`;
  const hidden = new Set();
  let geo = null;
  let cursor = null; // the row read out, or null

  const plot = h("div", { class: "chart-plot", tabindex: "0", "aria-label": "Production chart",
    "aria-describedby": "chart-caption chart-keys" });
  const tip = h("div", { class: "chart-tip", hidden: true });
  const legend = h("div", { class: "legend", role: "group", "aria-label": "Lines shown" },
    ...SERIES.map((s) => legendButton(s, (key, shown) => {
      if (shown) hidden.delete(key);
      else hidden.add(key);
      draw();
    })));
  figure.dataset.rows = String(rows.length);
  figure.dataset.points = String(points);
  figure.replaceChildren(
    legend,
    plot,
    h("figcaption", { id: "chart-caption", class: "muted" }, caption(rows.length, points)),
    h("p", { id: "chart-keys", class: "visually-hidden" },
      "Left and right arrow keys step through the rows; Home and End go to the first and last."),
  );

  function draw() {
    const width = Math.floor(plot.clientWidth);
    if (width <= 0) return; // hidden: drawn again when it shows
    geo = layout(width, rateTop, x0, x1);
    const root = svg("svg", {
      class: "chart-svg",
      width,
      height: geo.height,
      viewBox: `0 0 ${width} ${geo.height}`,
      role: "img",
      "aria-label": `Liquid, oil and water rates and water cut, ${period}`,
    });
    root.append(axes(geo, x0, x1));
    for (const line of lines) {
      if (!hidden.has(line.key)) root.append(drawLine(line, geo, days, rows));
    }
    root.append(svg("g", { class: "cursor" }));
    plot.replaceChildren(root, tip);
    if (cursor !== null) readOut(cursor, false);
  }

  /** Marks row `index` and shows its values; `announce` reads them to screen readers. */
  function readOut(index, announce) {
    cursor = index;
    if (geo === null) return;
    const row = rows[index];
    const at = geo.x(days[index]);
    const marks = plot.querySelector(".cursor");
    marks.replaceChildren(
      svg("line", { x1: at, x2: at, y1: geo.top, y2: geo.bottom, class: "cursor-line" }),
    );
    const items = [];
    for (const series of SERIES) {
      if (hidden.has(series.key)) continue;
      const value = row[series.key];
      if (value !== null) {
        marks.append(svg("circle", { cx: at, cy: geo.y[series.axis](value), r: 4.5, fill: "#fff",
          stroke: series.color, "stroke-width": 2.5 }));
      }
      items.push(h("div", {}, h("span", { class: "tip-swatch", "data-series": series.key }),
        `${series.label}: `, h("strong", {}, formatValue(value))));
    }
    const where = `${row.date} · row ${formatCount(index + 1)} of ${formatCount(rows.length)}`;
    tip.replaceChildren(h("div", { class: "tip-date" }, where), ...items);
    tip.setAttribute("aria-live", announce ? "polite" : "off");
    tip.hidden = false;
    const onRight = at > (geo.left + geo.right) / 2;
    tip.style.left = onRight ? "" : `${at + 12}px`;
    tip.style.right = onRight ? `${geo.width - at + 12}px` : "";
  }

  function hide() {
    cursor = null;
    tip.hidden = true;
    plot.querySelector(".cursor")?.replaceChildren();
  }

  function step(key) {
    const page = Math.max(1, Math.round(rows.length / 10));
    const moves = { ArrowLeft: -1, ArrowRight: 1, PageUp: -page, PageDown: page };
    if (key === "Home") return 0;
    if (key === "End") return rows.length - 1;
    if (!(key in moves)) return null;
    const from = cursor ?? (moves[key] > 0 ? -1 : rows.length);
    return Math.min(rows.length - 1, Math.max(0, from + moves[key]));
  }

  plot.addEventListener("pointermove", (event) => {
    if (geo === null) return;
    const px = event.clientX - plot.getBoundingClientRect().left;
    readOut(nearest(days, geo.day(px)), false);
  });
  plot.addEventListener("pointerleave", () => {
    if (document.activeElement !== plot) hide();
  });
  plot.addEventListener("blur", hide);
  plot.addEventListener("keydown", (event) => {
    if (event.key === "Escape") return hide();
    const index = step(event.key);
    if (index === null) return undefined;
    event.preventDefault();
    return readOut(index, true);
  });

  let lastWidth = Math.floor(plot.clientWidth);
  const observer = new ResizeObserver(() => {
    const width = Math.floor(plot.clientWidth);
    if (width !== lastWidth) {
      lastWidth = width;
      draw();
    }
  });
  observer.observe(plot);
  draw();

  return {
    destroy() {
      observer.disconnect();
      figure.replaceChildren();
      delete figure.dataset.rows;
      delete figure.dataset.points;
    },
  };
}
