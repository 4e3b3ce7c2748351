// How dates, times, durations and numbers are written on the page.

const DAY_MS = 86_400_000;

export function pad(value, width) {
  return String(value).padStart(width, "0");
}

/** Days since 1970-01-01 of a YYYY-MM-DD date; works for years 1..9999 (Date.UTC does not). */
export function dayNumber(iso) {
  const [year, month, day] = iso.split("-").map(Number);
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  return Math.round(date.getTime() / DAY_MS);
}

/** The parts of a day number: [year, month (1..12), day]. */
export function dayParts(days) {
  const date = new Date(days * DAY_MS);
  return [date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate()];
}

export function dayString(days) {
  const [year, month, day] = dayParts(days);
  return `${pad(year, 4)}-${pad(month, 2)}-${pad(day, 2)}`;
}

/** The day number of the first day of a month, counted as year * 12 + (month - 1). */
export function monthStart(monthIndex) {
  const year = Math.floor(monthIndex / 12);
  return dayNumber(`${pad(year, 4)}-${pad((monthIndex % 12) + 1, 2)}-01`);
}

/** A timestamp in the reader's time zone, as 2024-01-31 14:05:09. */
export function formatTimestamp(iso) {
  if (!iso) return "—";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return iso;
  const date = `${pad(t.getFullYear(), 4)}-${pad(t.getMonth() + 1, 2)}-${pad(t.getDate(), 2)}`;
  return `${date} ${pad(t.getHours(), 2)}:${pad(t.getMinutes(), 2)}:${pad(t.getSeconds(), 2)}`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

export function formatCount(n) {
  return n.toLocaleString("en-US");
}

/** A value of the result as the API and the CSV give it; a dash where there is none. */
export function formatValue(value) {
  return value === null || value === undefined ? "—" : String(value);
}

/** A tick label: enough significant digits, no float noise (0.30000000000000004). */
export function formatTick(value) {
  return String(Number(value.toPrecision(10)));
}
