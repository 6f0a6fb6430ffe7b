// The dashboard: events over time by method and by risk band, north-south vs
// east-west, the riskiest hosts, the newest high-risk events as they arrive, and the
// health of collection and detection.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, follow } from "../api.js";
import { StackedBars } from "../charts.js";
import {
  Card,
  Host,
  Loaded,
  Methods,
  Risk,
  RiskBar,
  Tabs,
  useApi,
} from "../components.js";
import { BAND_COLORS, count, iso, label, service, time } from "../format.js";
import { html } from "../html.js";
import { href } from "../router.js";

export const RANGES = [
  ["1h", "1 h", 3600],
  ["24h", "24 h", 86400],
  ["7d", "7 days", 7 * 86400],
  ["30d", "30 days", 30 * 86400],
  ["all", "all", null],
];

const PALETTE = ["#38bdf8", "#f59e0b", "#ef4444", "#a78bfa", "#2dd4bf", "#f472b6", "#84cc16",
  "#fb923c"];
const HIGH = 60;

/** Seconds per bucket so that `span` seconds make at most about 60 bars. */
function bucketFor(span) {
  const steps = [300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400];
  return steps.find((s) => span / s <= 60) || 7 * 86400;
}

export function Dashboard({ clock }) {
  const [range, setRange] = useState("24h");
  const span = RANGES.find((r) => r[0] === range)[2];
  const since = span && clock ? iso(clock - span * 1000) : undefined;
  const ready = clock !== null || range === "all";
  const bucket = span ? bucketFor(span) : 3600;
  const [tick, setTick] = useState(0);
  const stats = useApi(ready ? "/events/stats" : null, { since, bucket }, tick);
  const hosts = useApi("/hosts", { limit: 10 }, tick);
  useEffect(() => {
    const t = setInterval(() => setTick((n) => n + 1), 30000);
    return () => clearInterval(t);
  }, []);
  return html`<div class="view" id="view-dashboard" data-testid="view-dashboard">
    <div class="view-head">
      <h1>Dashboard</h1>
      <${Tabs} value=${range} testid="dashboard-range" onChange=${setRange}
        options=${RANGES.map(([v, t]) => [v, t])} />
    </div>
    <${Loaded} state=${stats} what="statistics">
      ${(s) => html`<${Totals} stats=${s} since=${since} />
        <div class="grid2">
          <${Card} title="Events over time by method" id="chart-methods">
            <${MethodChart} stats=${s} bucket=${bucket} />
          <//>
          <${Card} title="Events over time by risk band" id="chart-bands">
            <${BandChart} stats=${s} />
          <//>
        </div>`}
    <//>
    <div class="grid2">
      <${Card} title="Riskiest hosts" id="top-hosts"
        actions=${html`<a href="#/hosts">all hosts →</a>`}>
        <${Loaded} state=${hosts} what="hosts">
          ${(h) => html`<${TopHosts} hosts=${h.items} />`}
        <//>
      <//>
      <${LiveHighRisk} />
    </div>
    <${Health} tick=${tick} />
  </div>`;
}

function Totals({ stats, since }) {
  const t = stats.totals || {};
  const dirs = stats.directions || [];
  const total = dirs.reduce((a, d) => a + d.events, 0) || 1;
  const colors = { "north-south": "#f59e0b", "east-west": "#38bdf8" };
  return html`<div class="kpis" data-testid="kpis">
    <a class="kpi" href=${href("events", { since })} data-testid="kpi-events">
      <span class="kpi-value">${count(t.events)}</span><span class="kpi-label">events</span>
    </a>
    <a class="kpi" href=${href("events", { since, min_risk: 80 })} data-testid="kpi-high">
      <span class="kpi-value high">${count(t.high)}</span>
      <span class="kpi-label">high risk (≥ 80)</span>
    </a>
    <a class="kpi" href=${href("events", { since, status: "new" })} data-testid="kpi-new">
      <span class="kpi-value">${count(t.new)}</span><span class="kpi-label">not yet triaged</span>
    </a>
    <div class="kpi wide" data-testid="directions">
      <span class="kpi-label">north-south vs east-west</span>
      <div class="splitbar">
        ${dirs.map(
          (d) => html`<a class="split" href=${href("events", { since, direction: d.direction === "any" ? "" : d.direction })}
            style=${`flex:${d.events};background:${colors[d.direction] || "#64748b"}`}
            title=${`${d.direction}: ${d.events} events, max risk ${d.max_risk}`}></a>`,
        )}
      </div>
      <div class="split-legend">
        ${dirs.map(
          (d) => html`<span><i class="dot" style=${`background:${colors[d.direction] || "#64748b"}`}></i>
            ${d.direction} <b>${count(d.events)}</b> (${Math.round((100 * d.events) / total)} %)</span>`,
        )}
      </div>
    </div>
  </div>`;
}

/** Bucket starts (seconds) from the first to the last bucket of the series, no gaps. */
function buckets(series, bucket) {
  if (!series.length) return [];
  const ts = series.map((r) => Date.parse(r.t) / 1000);
  const lo = Math.min(...ts);
  const hi = Math.max(...ts);
  const xs = [];
  for (let x = lo; x <= hi; x += bucket) xs.push(x);
  return xs;
}

function MethodChart({ stats, bucket }) {
  const { xs, layers } = useMemo(() => {
    const series = stats.series || [];
    const xs = buckets(series, bucket);
    const index = new Map(xs.map((x, i) => [x, i]));
    const totals = new Map();
    for (const r of series) totals.set(r.method, (totals.get(r.method) || 0) + r.events);
    const top = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, 7).map((e) => e[0]);
    const names = [...top, ...(totals.size > top.length ? ["other"] : [])];
    const values = Object.fromEntries(names.map((n) => [n, xs.map(() => 0)]));
    for (const r of series) {
      const name = top.includes(r.method) ? r.method : "other";
      const i = index.get(Date.parse(r.t) / 1000);
      if (i !== undefined) values[name][i] += r.events;
    }
    return {
      xs,
      layers: names.map((n, i) => ({
        label: n,
        color: n === "other" ? "#64748b" : PALETTE[i % PALETTE.length],
        values: values[n],
      })),
    };
  }, [stats, bucket]);
  if (!xs.length) return html`<div class="muted empty">No events in this range.</div>`;
  return html`<${StackedBars} xs=${xs} layers=${layers} testid="chart-methods-plot" />`;
}

function BandChart({ stats }) {
  const { xs, layers } = useMemo(() => {
    // events counted once per band when the API gives `bands`; otherwise the most
    // events any one method saw in that bucket and band (methods of one event overlap)
    const exact = stats.bands;
    const rows = exact || stats.series || [];
    const step = rows.length > 1 ? guessStep(rows) : 3600;
    const xs = buckets(rows, step);
    const index = new Map(xs.map((x, i) => [x, i]));
    const values = { low: xs.map(() => 0), medium: xs.map(() => 0), high: xs.map(() => 0) };
    for (const r of rows) {
      const i = index.get(Date.parse(r.t) / 1000);
      if (i === undefined || !values[r.band]) continue;
      values[r.band][i] = exact ? values[r.band][i] + r.events : Math.max(values[r.band][i], r.events);
    }
    return {
      xs,
      layers: ["low", "medium", "high"].map((b) => ({ label: b, color: BAND_COLORS[b], values: values[b] })),
    };
  }, [stats]);
  if (!xs.length) return html`<div class="muted empty">No events in this range.</div>`;
  return html`<${StackedBars} xs=${xs} layers=${layers} testid="chart-bands-plot" />`;
}

function guessStep(rows) {
  const ts = [...new Set(rows.map((r) => Date.parse(r.t) / 1000))].sort((a, b) => a - b);
  let step = Infinity;
  for (let i = 1; i < ts.length; i++) step = Math.min(step, ts[i] - ts[i - 1]);
  return Number.isFinite(step) ? step : 3600;
}

function TopHosts({ hosts }) {
  if (!hosts.length) return html`<div class="muted empty">No risky hosts yet.</div>`;
  return html`<table class="table compact" data-testid="top-hosts-table">
    <thead><tr><th>#</th><th>host</th><th>risk</th><th>events</th><th>methods</th><th>last event</th></tr></thead>
    <tbody>
      ${hosts.map(
        (h) => html`<tr>
          <td class="num">${h.rank}</td>
          <td><${Host} ip=${h.ip} />${h.internal ? null : html` <span class="chip ext">ext</span>`}</td>
          <td class="w-risk"><${RiskBar} value=${h.risk} /></td>
          <td class="num">${count(h.events)}</td>
          <td><${Methods} methods=${h.methods} /></td>
          <td class="time">${time(h.last_event, false)}</td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}

/** The newest events at risk >= 60: a first page, then the live stream on top. */
function LiveHighRisk() {
  const [rows, setRows] = useState(null);
  const [state, setState] = useState("connecting");
  const [error, setError] = useState(null);
  useEffect(() => {
    let stop = () => {};
    let gone = false;
    api("/events", { params: { min_risk: HIGH, sort: "-ts_start", limit: 12 } }).then(
      (page) => {
        if (gone) return;
        setRows(page.items);
        stop = follow({ min_risk: HIGH }, (doc) => {
          setRows((old) => {
            const rest = (old || []).filter((e) => e.id !== doc.id);
            return [{ ...doc, fresh: Date.now() }, ...rest].slice(0, 12);
          });
        }, setState);
      },
      (e) => setError(e),
    );
    return () => {
      gone = true;
      stop();
    };
  }, []);
  return html`<${Card} title="Newest high-risk events" id="live-events"
    actions=${html`<span class=${`live live-${state}`} data-testid="live-state">${label(state)}</span>
      <a href=${href("events", { min_risk: HIGH, sort: "-ts_start" })}>all →</a>`}>
    ${error ? html`<div class="error">${error.message}</div>` : null}
    ${rows === null
      ? html`<div class="muted">Loading…</div>`
      : rows.length === 0
        ? html`<div class="muted empty">No high-risk events yet.</div>`
        : html`<table class="table compact" data-testid="live-events-table">
            <tbody>
              ${rows.map(
                (e) => html`<tr key=${e.id} class=${e.fresh ? "fresh" : ""} data-id=${e.id}
                  data-testid="live-event-row" onClick=${() => (location.hash = `#/events/${e.id}`)}>
                  <td><${Risk} value=${e.risk} /></td>
                  <td class="time">${time(e.ts_start, false)}</td>
                  <td class="pair"><${Host} ip=${e.src_ip} /> → <${Host} ip=${e.dst_ip} />
                    <span class="muted">${service(e)}</span></td>
                  <td><${Methods} methods=${e.methods} /></td>
                </tr>`,
              )}
            </tbody>
          </table>`}
  <//>`;
}

function Health({ tick }) {
  const status = useApi("/status", null, tick);
  const exporters = useApi("/exporters", null, tick);
  return html`<div class="grid2">
    <${Card} title="Collection and detection" id="health">
      <${Loaded} state=${status} what="status">${(s) => html`<${StatusFacts} status=${s} />`}<//>
    <//>
    <${Card} title="Exporters" id="exporters" actions=${html`<a href="#/operations">details →</a>`}>
      <${Loaded} state=${exporters} what="exporters">
        ${(list) => html`<${ExporterTable} exporters=${list} />`}
      <//>
    <//>
  </div>`;
}

const tile = (value, text, bad) =>
  html`<div class=${`tile ${bad ? "bad" : ""}`}><b>${value}</b><span>${text}</span></div>`;

export function StatusFacts({ status }) {
  if (status.scoped) {
    // a user of some sites: the service's counters would add up other sites' traffic
    return html`<div class="tiles" data-testid="status-tiles">
        ${tile(uptime(status.uptime_s), `up · v${status.version}`)}
      </div>
      <p class="muted small" data-testid="status-scoped">Collection and detection counters
        add up the traffic of every site: users of all sites see them. The exporters of your
        sites, with their counters, are in the exporters table.</p>`;
  }
  const c = status.collector || {};
  const d = status.detection || {};
  const errors = Object.values(c.decode_errors || {}).reduce((a, b) => a + b, 0);
  return html`<div class="tiles" data-testid="status-tiles">
    ${tile(count(c.datagrams), "datagrams")}
    ${tile(count(c.flows_decoded), "flows decoded")}
    ${tile(count(c.flows_archived), "flows archived")}
    ${tile(count(c.kernel_drops || 0), "kernel drops", c.kernel_drops > 0)}
    ${tile(count(errors), "decode errors", errors > 0)}
    ${tile(count(d.flows), "flows scored")}
    ${tile(count(d.alarms), "alarms")}
    ${tile(count(d.events_published), "events published")}
    ${tile(count(d.errors || 0), "detection errors", d.errors > 0)}
    ${tile(count(d.queued_batches || 0), "batches queued", d.queued_batches > 2)}
    ${tile(count(status.stream_clients || 0), "live clients")}
    ${tile(uptime(status.uptime_s), `up · v${status.version}`)}
  </div>`;
}

function uptime(s) {
  if (!s && s !== 0) return "";
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export function ExporterTable({ exporters }) {
  if (!exporters.length) return html`<div class="muted empty">No exporter heard from yet.</div>`;
  return html`<table class="table compact" data-testid="exporters-table">
    <thead><tr><th>exporter</th><th>protocol</th><th>domain</th><th class="num">flows</th>
      <th class="num">gaps</th><th class="num">lost</th><th class="num">errors</th><th>sampling</th><th>last seen</th></tr></thead>
    <tbody>
      ${exporters.map(
        (x) => html`<tr>
          <td class="ip">${x.exporter}</td><td>${x.protocol}</td><td class="num">${x.domain}</td>
          <td class="num">${count(x.flows)}</td>
          <td class=${`num ${x.sequence_gaps ? "warn" : ""}`}>${count(x.sequence_gaps)}</td>
          <td class=${`num ${x.lost ? "warn" : ""}`}>${count(x.lost)}</td>
          <td class=${`num ${x.errors ? "bad" : ""}`}>${count(x.errors)}</td>
          <td class="num">${x.sampling > 1 ? `1:${x.sampling}` : "none"}</td>
          <td class="time">${time(x.last_seen)}</td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}
