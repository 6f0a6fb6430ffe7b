// Hosts ranked by decaying risk, and one host's profile: risk and rank, names from
// passive DNS, behavior over 1/7/30 days against its usual band, its risk over time,
// the relays it is the middle of, its events and the graph of whom it talks to in them.
import { useMemo, useState } from "preact/hooks";
import { BehaviorChart, StackedBars } from "../charts.js";
import {
  Card,
  Facts,
  Host,
  HORIZONS,
  Loaded,
  Methods,
  Pager,
  Risk,
  RiskBar,
  Status,
  Tabs,
  useApi,
} from "../components.js";
import { count, isPrivate, service, time } from "../format.js";
import { CommGraph, GraphLegend } from "../graph.js";
import { html } from "../html.js";
import { go, href } from "../router.js";
import { MEASURES } from "./event.js";

export function Hosts({ params }) {
  const offset = Number(params.get("offset") || 0);
  const internal = params.get("internal") || "";
  const limit = 50;
  const state = useApi("/hosts", { limit, offset, internal });
  const nav = (changes) => go("hosts", { ...Object.fromEntries(params), ...changes }, true);
  return html`<div class="view" id="view-hosts" data-testid="view-hosts">
    <div class="view-head">
      <h1>Hosts by risk</h1>
      <${Tabs} value=${internal} testid="hosts-internal"
        options=${[["", "all"], ["true", "internal"], ["false", "external"]]}
        onChange=${(v) => nav({ internal: v, offset: "" })} />
    </div>
    <${Loaded} state=${state} what="hosts">
      ${(page) => html`<div class="table-wrap"><table class="table" data-testid="hosts-table">
          <thead><tr><th>#</th><th>host</th><th>risk</th><th class="num">events</th><th class="num">alarms</th>
            <th>methods</th><th>sites</th><th>first event</th><th>last event</th></tr></thead>
          <tbody>
            ${page.items.map(
              (h) => html`<tr onClick=${() => go(`hosts/${h.ip}`)}>
                <td class="num">${h.rank}</td>
                <td><${Host} ip=${h.ip} />${h.internal ? null : html` <span class="chip ext">ext</span>`}</td>
                <td class="w-risk"><${RiskBar} value=${h.risk} /></td>
                <td class="num">${count(h.events)}</td><td class="num">${count(h.alarms)}</td>
                <td><${Methods} methods=${h.methods} /></td><td>${h.sites}</td>
                <td class="time">${time(h.first_event, false)}</td><td class="time">${time(h.last_event, false)}</td>
              </tr>`,
            )}
          </tbody>
        </table></div>
        <div class="table-foot"><${Pager} total=${page.total} limit=${limit} offset=${offset}
          onOffset=${(o) => nav({ offset: o || "" })} /></div>`}
    <//>
  </div>`;
}

export function HostView({ ip }) {
  const [horizon, setHorizon] = useState("7d");
  const [measure, setMeasure] = useState("bytes_out");
  const profile = useApi(`/hosts/${ip}`, { horizon });
  const events = useApi("/events", { host: ip, sort: "-risk", limit: 200 });
  return html`<div class="view" id="view-host" data-testid="view-host" data-ip=${ip}>
    <div class="view-head">
      <div>
        <a class="back" href="#/hosts">← hosts</a>
        <h1 class="mono">${ip}</h1>
      </div>
      <${Tabs} value=${horizon} options=${HORIZONS} onChange=${setHorizon} testid="host-horizon" />
    </div>
    <${Loaded} state=${profile} what="the host">
      ${(p) => p.known === false
        ? html`<div class="card notfound" data-testid="host-unknown">
            <h1>Nothing known</h1>
            <p class="muted">No event, behavior or name of <span class="mono">${ip}</span> in
              the sites you can see.</p>
          </div>`
        : html`<div class="grid-main">
          <${Card} title="Behavior against its usual band" id="host-behavior"
            actions=${html`<select value=${measure} onChange=${(e) => setMeasure(e.target.value)}
              data-testid="host-measure">
              ${[...MEASURES, ["peers", "peers"]].map(([v, t]) => html`<option value=${v}>${t}</option>`)}
            </select>`}>
            <${BehaviorChart} behavior=${p.behavior} measure=${measure} testid="host-chart" />
          <//>
          <${Card} title="Risk" id="host-risk">
            <${HostFacts} p=${p} ip=${ip} />
          <//>
        </div>`}
    <//>
    ${profile.data?.known === false || !profile.data ? null : html`<div class="grid2">
      <${Card} title="Risk over time" id="host-risk-time">
        <${RiskOverTime} series=${profile.data.risk_series || []} />
      <//>
      <${Card} title="Relays through it" id="host-relays">
        <${Relays} relays=${profile.data.relays || []} />
      <//>
    </div>`}
    ${profile.data?.known === false ? null : html`<div class="grid2">
      <${Card} title="Its riskiest events" id="host-events"
        actions=${html`<a href=${href("events", { host: ip })} data-testid="host-all-events">all events →</a>`}>
        <${Loaded} state=${events} what="events">
          ${(page) => html`<${HostEvents} items=${page.items.slice(0, 25)} />`}
        <//>
      <//>
      <${Card} title="Communications" id="host-graph-card">
        <${Loaded} state=${events} what="communications">
          ${(page) => html`<${HostGraph} ip=${ip} items=${page.items} />`}
        <//>
      <//>
    </div>`}
  </div>`;
}

function HostFacts({ p, ip }) {
  const r = p.risk || {};
  return html`<div class="host-risk">
      <${RiskBar} value=${r.risk || 0} />
    </div>
    <${Facts} rows=${[
      ["rank", p.rank ? `#${p.rank}` : "not ranked"],
      ["events", html`<a href=${href("events", { host: ip })}>${count(p.events)}</a>`],
      ["alarms", count(r.alarms)],
      ["highest event risk", r.max_event_risk],
      ["methods", r.methods ? html`<${Methods} methods=${r.methods} />` : ""],
      ["sites", r.sites],
      ["side", r.internal === undefined ? "" : r.internal ? "internal" : "external"],
      ["first event", time(r.first_event)],
      ["last event", time(r.last_event)],
      ["names (passive DNS)", (p.names || []).join(", ") || "none seen"],
    ]} />`;
}

function HostEvents({ items }) {
  if (!items.length) return html`<div class="muted empty">No events.</div>`;
  return html`<table class="table compact" data-testid="host-events-table">
    <tbody>
      ${items.map(
        (e) => html`<tr onClick=${() => (location.hash = `#/events/${e.id}`)}>
          <td><${Risk} value=${e.risk} /></td>
          <td class="time">${time(e.ts_start, false)}</td>
          <td class="pair"><${Host} ip=${e.src_ip} /> → <${Host} ip=${e.dst_ip} />
            <span class="muted">${service(e)}</span></td>
          <td><${Methods} methods=${e.methods} /></td>
          <td><${Status} status=${e.status} verdict=${e.verdict} /></td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}

const RISKY = ["M26", "M27", "M28", "M29"];

/** The host in the middle, its peers in its events around it, one edge per service. */
function HostGraph({ ip, items }) {
  const { nodes, edges } = useMemo(() => {
    const nodes = new Map([[ip, { id: ip, ring: "focus", external: !isPrivate(ip) }]]);
    const edges = new Map();
    for (const e of items) {
      const peer = e.src_ip === ip ? e.dst_ip : e.src_ip;
      if (!peer) continue;
      const risky = (e.methods || []).some((m) => RISKY.includes(m)) && !isPrivate(peer);
      const old = nodes.get(peer);
      nodes.set(peer, { id: peer, ring: old?.ring || "peer", external: !isPrivate(peer), risky: old?.risky || risky });
      const k = `${e.src_ip}>${e.dst_ip}>${service(e)}`;
      const edge = edges.get(k) || { source: e.src_ip, target: e.dst_ip, label: service(e), kind: "comm", weight: 0 };
      edge.weight += 1;
      edges.set(k, edge);
    }
    return { nodes: [...nodes.values()], edges: [...edges.values()] };
  }, [ip, items]);
  return html`<${CommGraph} nodes=${nodes} edges=${edges} height=${560} testid="host-graph" />
    <${GraphLegend} host=${true} />`;
}

/** The highest risk of the host's events per bucket of the horizon, and how many. */
function RiskOverTime({ series }) {
  const { xs, layers } = useMemo(() => {
    const xs = series.map((r) => Date.parse(r.t) / 1000);
    const layers = [
      { label: "highest risk", color: "#f59e0b", values: series.map((r) => Math.round(r.max_risk)) },
    ];
    return { xs, layers };
  }, [series]);
  if (!series.length) return html`<div class="muted empty">No events in this horizon.</div>`;
  return html`<${StackedBars} xs=${xs} layers=${layers} height=${160} testid="host-risk-plot" />
    <div class="muted small">
      ${`${count(series.reduce((n, r) => n + r.events, 0))} events in ${series.length} buckets`}
    </div>`;
}

/** Relays (N9) with this host in the middle: what came in and went on within seconds. */
function Relays({ relays }) {
  if (!relays.length) return html`<div class="muted empty">It relays nothing seen.</div>`;
  return html`<table class="table compact" data-testid="host-relays-table">
    <thead><tr><th>in</th><th>on to</th><th class="num">pairs</th><th class="num">delay</th></tr></thead>
    <tbody>
      ${relays.map(
        (r) => html`<tr onClick=${() => (location.hash = `#/events/${r.event_id}`)}>
          <td class="mono">${r.inbound}</td>
          <td class="mono">${r.outbound}</td>
          <td class="num">${r.pairs}</td>
          <td class="num">${r.delay_s == null ? "" : `${r.delay_s.toFixed(1)} s`}</td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}
