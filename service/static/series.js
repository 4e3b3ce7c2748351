// The chart's data side: which lines there are, and which rows each line is drawn through.

/** The most points one line is drawn through. */
export const MAX_DRAWN = 1000;

export const SERIES = [
  { key: "liquid", label: "Liquid", color: "#0b5cad", axis: "rate" },
  { key: "oil", label: "Oil", color: "#a83c00", axis: "rate" },
  { key: "water", label: "Water", color: "#00735c", axis: "rate" },
  { key: "wct", label: "Water cut", color: "#8c2a72", axis: "wct", dash: "7 4" },
];

/**
 * Indices of the rows a line goes through, -1 where it breaks (no value). All rows when they
 * fit in `max`; otherwise the lowest and the highest row of each of max / 2 slices, in row
 * order, so that every peak and trough survives the thinning.
 */
export function pickIndices(rows, key, max) {
  const n = rows.length;
  const picked = [];
  if (n <= max) {
    for (let i = 0; i < n; i += 1) picked.push(rows[i][key] === null ? -1 : i);
    return picked;
  }
  const slices = Math.floor(max / 2);
  for (let s = 0; s < slices; s += 1) {
    let low = -1;
    let high = -1;
    const end = Math.floor(((s + 1) * n) / slices);
    for (let i = Math.floor((s * n) / slices); i < end; i += 1) {
      const value = rows[i][key];
      if (value === null) continue;
      if (low < 0 || value < rows[low][key]) low = i;
      if (high < 0 || value > rows[high][key]) high = i;
    }
    if (low < 0) picked.push(-1);
    else if (low === high) picked.push(low);
    else picked.push(Math.min(low, high), Math.max(low, high));
  }
  return picked;
}

export function countPoints(indices) {
  return indices.reduce((count, i) => count + (i >= 0 ? 1 : 0), 0);
}

/** How many rows each slice holds when a result is thinned. */
export function sliceSize(rowCount) {
  return Math.round(rowCount / Math.floor(MAX_DRAWN / 2));
}

/** The highest rate of all rows: a loop, since spreading 100,000 values overflows the stack. */
export function highestRate(rows) {
  let top = 0;
  for (const row of rows) {
    for (const key of ["liquid", "oil", "water"]) {
      if (row[key] !== null && row[key] > top) top = row[key];
    }
  }
  return top;
}

/** The index of the sorted day number closest to `day`. */
export function nearest(days, day) {
  let lo = 0;
  let hi = days.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (days[mid] < day) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && day - days[lo - 1] < days[lo] - day ? lo - 1 : lo;
}
