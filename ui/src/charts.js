// Time charts on uPlot (canvas, fast at thousands of points): stacked event counts over
// time, and a key's observed behavior against the band of what is usual for it.
import { useEffect, useMemo, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { bytes, count, time } from "./format.js";
import { html } from "./html.js";

const AXIS = { stroke: "#8b98ad", grid: { stroke: "#1e2a3b", width: 1 }, ticks: { show: false } };

/** A uPlot chart sized to its container; rebuilt when `data` or `make` change. */
function Plot({ make, data, height, testid }) {
  const box = useRef(null);
  useEffect(() => {
    const el = box.current;
    const width = () => Math.max(200, el.clientWidth);
    const plot = new uPlot({ ...make(), width: width(), height }, data, el);
    const ro = new ResizeObserver(() => plot.setSize({ width: width(), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.destroy();
    };
  }, [make, data, height]);
  return html`<div class="plot" ref=${box} data-testid=${testid}></div>`;
}

function timeAxis() {
  return {
    ...AXIS,
    space: 90,
    values: (u, splits, _ax, space) => {
      const span = (u.scales.x.max || 0) - (u.scales.x.min || 0);
      return splits.map((s) => {
        const t = time(new Date(s * 1000), false);
        return span > 3 * 86400 ? t.slice(5, 10) : span > 86400 ? t.slice(5) : t.slice(11);
      });
    },
  };
}

/**
 * Stacked bars of counts over time. `xs`: bucket starts (unix seconds); `layers`:
 * [{ label, color, values }] bottom first.
 */
export function StackedBars({ xs, layers, height = 180, testid }) {
  const make = useMemo(() => () => {
    const bars = uPlot.paths.bars({ size: [0.8, 40], align: 1 });
    return {
      legend: { live: true },
      cursor: { points: { show: false } },
      scales: { x: { time: true } },
      axes: [timeAxis(), { ...AXIS, size: 40, values: (u, v) => v.map(count) }],
      series: [
        { label: "", value: (u, v) => (v === null ? "" : time(new Date(v * 1000), false)) },
        ...[...layers].reverse().map((l, i) => ({
          label: l.label,
          stroke: l.color,
          fill: `${l.color}cc`,
          width: 0,
          paths: bars,
          points: { show: false },
          value: (u, _v, _si, idx) =>
            idx === null ? "" : count(layers[layers.length - 1 - i].values[idx] || 0),
        })),
      ],
    };
  }, [layers]);
  const data = useMemo(() => stack(xs, layers), [xs, layers]);
  return html`<${Plot} make=${make} data=${data} height=${height} testid=${testid} />`;
}

function stack(xs, layers) {
  // each drawn layer is the sum of itself and those below, drawn top-down
  const sums = [];
  let acc = xs.map(() => 0);
  for (const l of layers) {
    acc = acc.map((a, i) => a + (l.values[i] || 0));
    sums.push(acc);
  }
  return [xs, ...sums.reverse()];
}

const MEASURE_FMT = {
  bytes_out: bytes,
  bytes_in: bytes,
  pkts_out: count,
  pkts_in: count,
  flows: count,
  peers: count,
};

/**
 * A behavior series (GET /events/{id}/behavior, GET /hosts/{ip}) of one measure: the
 * observed line, the usual band (5th-95th percentile) and its median; `mark` shades a
 * time range (the event's window), [startMs, endMs].
 */
export function BehaviorChart({ behavior, measure, mark, height = 220, testid }) {
  const markKey = mark ? mark.join() : "";
  const built = useMemo(() => chart(behavior, measure, mark), [behavior, measure, markKey]);
  if (!built) return html`<div class="muted empty">No behavior recorded for this horizon.</div>`;
  return html`<${Plot} make=${built.make} data=${built.data} height=${height} testid=${testid} />`;
}

function chart(behavior, measure, mark) {
  const fmt = MEASURE_FMT[measure] || count;
  const step = behavior.resolution_s || 300;
  const observed = new Map();
  for (const row of behavior.series || []) {
    observed.set(Date.parse(row.bucket) / 1000, row[measure] ?? 0);
  }
  const usual = new Map();
  for (const row of behavior.band || []) {
    if (row.measure === measure) usual.set(Date.parse(row.bucket) / 1000, row);
  }
  let xs = [...new Set([...observed.keys(), ...usual.keys()])].sort((a, b) => a - b);
  if (xs.length === 1) xs = [xs[0] - step, xs[0], xs[0] + step];
  // one bucket alone: its band drawn across the padded range, so it shows
  const only = usual.size === 1 ? [...usual.values()][0] : null;
  const band = (x) => usual.get(x) ?? only;
  const data = [
    xs,
    xs.map((x) => band(x)?.high ?? null),
    xs.map((x) => band(x)?.low ?? null),
    xs.map((x) => band(x)?.median ?? null),
    xs.map((x) => (usual.size && !observed.has(x) && usual.has(x) ? 0 : observed.get(x) ?? null)),
  ];
  const make = () => ({
    legend: { show: false },
    cursor: { points: { size: 6 } },
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.08)] } },
    axes: [timeAxis(), { ...AXIS, size: 60, values: (u, v) => v.map(fmt) }],
    bands: [{ series: [1, 2], fill: "rgba(56, 189, 248, 0.16)" }],
    series: [
      { value: (u, v) => (v === null ? "" : time(new Date(v * 1000), false)) },
      { label: "usual high", stroke: "rgba(56,189,248,0.35)", width: 1, value: (u, v) => fmt(v) },
      { label: "usual low", stroke: "rgba(56,189,248,0.35)", width: 1, value: (u, v) => fmt(v) },
      { label: "median", stroke: "#38bdf8", width: 1, dash: [4, 4], value: (u, v) => fmt(v) },
      {
        label: "observed",
        stroke: "#f59e0b",
        width: 2,
        points: { show: xs.length < 60 },
        value: (u, v) => fmt(v),
      },
    ],
    hooks: mark ? { drawClear: [(u) => shade(u, mark)] } : {},
  });
  return xs.length ? { make, data } : null;
}

function shade(u, [from, to]) {
  const x0 = u.valToPos(from / 1000, "x", true);
  const x1 = u.valToPos(to / 1000, "x", true);
  const { top, height, left, width } = u.bbox;
  const a = Math.max(left, Math.min(x0, x1));
  const b = Math.min(left + width, Math.max(x0, x1, x0 + 2));
  if (b <= a) return;
  u.ctx.save();
  u.ctx.fillStyle = "rgba(239, 68, 68, 0.18)";
  u.ctx.fillRect(a, top, b - a, height);
  u.ctx.restore();
}
