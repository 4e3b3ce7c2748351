// Axis ticks: round numbers for rates, calendar steps (days, months, years) for dates.

import { dayParts, dayString, monthStart, pad } from "./format.js";

/** Ticks 0, step, 2 step, ... up to the first one at or above max, about `count` of them. */
export function numberTicks(max, count) {
  const top = max > 0 ? max : 1;
  const raw = top / Math.max(count, 1);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => s >= raw);
  const ticks = [];
  for (let i = 0; i * step < top + step * 1e-9; i += 1) ticks.push(i * step);
  if (ticks.at(-1) < top) ticks.push(ticks.length * step);
  return ticks;
}

const DAY_STEPS = [1, 2, 7, 14];
const MONTH_STEPS = [1, 2, 3, 6];
const YEAR_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];
const CHOICES = [
  ...DAY_STEPS.map((step) => ({ unit: "day", step, days: step })),
  ...MONTH_STEPS.map((step) => ({ unit: "month", step, days: step * 30.44 })),
  ...YEAR_STEPS.map((step) => ({ unit: "year", step, days: step * 365.25 })),
];

function dayTicks(first, last, step) {
  // Weeks start on Mondays; day 0 (1970-01-01) was a Thursday.
  const offset = step % 7 === 0 ? 4 : 0;
  const ticks = [];
  for (let d = Math.ceil((first - offset) / step) * step + offset; d <= last; d += step) {
    ticks.push({ value: d, label: dayString(d) });
  }
  return ticks;
}

function monthTicks(first, last, step, yearly) {
  const [year, month, day] = dayParts(first);
  let index = year * 12 + month - 1 + (day > 1 ? 1 : 0);
  const unit = yearly ? step * 12 : step;
  index = Math.ceil(index / unit) * unit;
  const ticks = [];
  for (; monthStart(index) <= last; index += unit) {
    const y = pad(Math.floor(index / 12), 4);
    const label = yearly ? y : `${y}-${pad((index % 12) + 1, 2)}`;
    ticks.push({ value: monthStart(index), label });
  }
  return ticks;
}

/** Date ticks between two day numbers, at most `count` of them, on calendar boundaries. */
export function dateTicks(first, last, count) {
  const span = Math.max(last - first, 1);
  const choice = CHOICES.find((c) => span / c.days <= Math.max(count, 1)) ?? CHOICES.at(-1);
  if (choice.unit === "day") return dayTicks(first, last, choice.step);
  return monthTicks(first, last, choice.step, choice.unit === "year");
}
