import { useId } from "react";

import { toChartNumber } from "../lib/money";
import { formatDateTime } from "../lib/time";

export interface BalancePoint {
  version: number;
  balance: string;
  at: string | null;
}

const W = 640;
const H = 220;
const PAD = { left: 64, right: 16, top: 16, bottom: 30 };

function axisNumber(value: number): string {
  return new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 2 }).format(value);
}

/** Round axis ticks (multiples of 1, 2 or 5 times a power of ten) covering ``low``..``high``. */
export function niceTicks(low: number, high: number, count = 4): number[] {
  if (high <= low) return [low, low + 1];
  const rough = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = ([1, 2, 5, 10].find((m) => m * power >= rough) ?? 10) * power;
  const ticks: number[] = [];
  for (let t = Math.floor(low / step) * step; t < high + step; t += step) {
    ticks.push(Number(t.toPrecision(12)));
    if (t >= high) break;
  }
  return ticks;
}

/** The balance after each version, as a step line: a ledger's balance holds until the next event. */
export function BalanceChart({
  points,
  currency,
  selectedVersion,
}: {
  points: BalancePoint[];
  currency: string;
  selectedVersion: number | null;
}) {
  const id = useId();
  if (points.length === 0) return null;
  const values = points.map((p) => toChartNumber(p.balance));
  const ticks = niceTicks(Math.min(...values, 0), Math.max(...values, 0));
  const bottom = ticks[0] ?? 0;
  const top = ticks[ticks.length - 1] ?? 1;
  const span = top - bottom || 1;
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const x = (i: number): number =>
    PAD.left + (points.length === 1 ? innerW / 2 : (i / (points.length - 1)) * innerW);
  const y = (v: number): number => PAD.top + innerH - ((v - bottom) / span) * innerH;

  let line = `M ${x(0)} ${y(values[0] ?? 0)}`;
  for (let i = 1; i < points.length; i += 1) {
    line += ` H ${x(i)} V ${y(values[i] ?? 0)}`;
  }
  const area = `${line} V ${y(bottom)} H ${x(0)} Z`;

  const highest = points.reduce((best, p) =>
    toChartNumber(p.balance) > toChartNumber(best.balance) ? p : best,
  );
  const first = points[0];
  const last = points[points.length - 1];
  const selectedIndex =
    selectedVersion === null ? -1 : points.findLastIndex((p) => p.version <= selectedVersion);
  const selected = selectedIndex >= 0 ? points[selectedIndex] : undefined;
  const summary =
    points.length === 1 && first
      ? `${first.balance} ${currency} at version ${first.version}.`
      : first && last
        ? [
            `From ${first.balance} ${currency} at version ${first.version}`,
            `to ${last.balance} ${currency} at version ${last.version};`,
            `highest ${highest.balance} ${currency}.`,
          ].join(" ")
        : "";

  return (
    <figure className="chart">
      <svg
        viewBox={`0 0 ${W} ${H}`}
        role="img"
        aria-labelledby={`${id}-title ${id}-desc`}
        className="chart-svg"
        data-points={points.length}
      >
        <title id={`${id}-title`}>Balance over time ({currency})</title>
        <desc id={`${id}-desc`}>{summary}</desc>
        <defs>
          <linearGradient id={`${id}-fill`} x1="0" x2="0" y1="0" y2="1">
            <stop offset="0%" className="chart-fill-top" />
            <stop offset="100%" className="chart-fill-bottom" />
          </linearGradient>
        </defs>
        {ticks.map((t) => (
          <g key={t} className="chart-tick">
            <line x1={PAD.left} x2={W - PAD.right} y1={y(t)} y2={y(t)} />
            <text x={PAD.left - 8} y={y(t)} dy="0.32em" textAnchor="end">
              {axisNumber(t)}
            </text>
          </g>
        ))}
        <path d={area} fill={`url(#${id}-fill)`} className="chart-area" />
        <path d={line} className="chart-line" />
        {points.length <= 60
          ? points.map((p, i) => (
              <circle key={p.version} cx={x(i)} cy={y(values[i] ?? 0)} r={3} className="chart-dot" />
            ))
          : null}
        {selected ? (
          <g className="chart-selected" data-version={selected.version}>
            <line x1={x(selectedIndex)} x2={x(selectedIndex)} y1={PAD.top} y2={PAD.top + innerH} />
            <circle cx={x(selectedIndex)} cy={y(values[selectedIndex] ?? 0)} r={6} />
          </g>
        ) : null}
        {points.length === 1 && first ? (
          // One point sits in the middle: one label under it, not the same one at both ends.
          <text x={x(0)} y={H - 8} textAnchor="middle" className="chart-axis-label">
            {`v${first.version} · ${formatDateTime(first.at)}`}
          </text>
        ) : (
          <>
            <text x={PAD.left} y={H - 8} className="chart-axis-label">
              {first ? `v${first.version} · ${formatDateTime(first.at)}` : ""}
            </text>
            <text x={W - PAD.right} y={H - 8} textAnchor="end" className="chart-axis-label">
              {last ? `v${last.version} · ${formatDateTime(last.at)}` : ""}
            </text>
          </>
        )}
      </svg>
    </figure>
  );
}
