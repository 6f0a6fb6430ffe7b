// One event, fully explained: its alarms (grouped by method, every explanation kept),
// the alarmed key's behavior against its usual band over 1/7/30 days, the graph of the
// communication and its east-west hops, intel matches, the flows, and triage (verdict,
// status, comment) with its history.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api } from "../api.js";
import { BehaviorChart } from "../charts.js";
import {
  Card,
  ErrorBox,
  Facts,
  Host,
  HORIZONS,
  Loaded,
  Loading,
  Methods,
  Risk,
  Status,
  Tabs,
  useApi,
  useFollow,
} from "../components.js";
import { bytes, count, isPrivate, label, ms, num, proto, service, time } from "../format.js";
import { CommGraph, GraphLegend } from "../graph.js";
import { html } from "../html.js";
import { href } from "../router.js";

const INTEL_METHODS = new Set(["M26", "M27", "M28", "M29"]);
export const MEASURES = [
  ["bytes_out", "bytes out"],
  ["bytes_in", "bytes in"],
  ["pkts_out", "packets out"],
  ["pkts_in", "packets in"],
  ["flows", "flows"],
];

export function EventView({ id, me }) {
  const state = useApi(`/events/${id}`);
  const [event, setEvent] = useState(null);
  useEffect(() => setEvent(state.data), [state.data]);
  if (state.error) {
    // an event of a site outside the caller's scope answers 404 like a missing one
    return html`<div class="view" id="view-event" data-testid="view-event">
      <a href="#/events">← events</a>
      ${state.error.status === 404
        ? html`<div class="card notfound" data-testid="event-not-found">
            <h1>No such event</h1>
            <p class="muted">There is no event <span class="mono">${id}</span> in the sites you
              can see: it does not exist, was removed by retention, or belongs to another site.</p>
          </div>`
        : html`<${ErrorBox} error=${state.error} />`}
    </div>`;
  }
  if (!event) return html`<div class="view" id="view-event"><${Loading} what="the event" /></div>`;
  return html`<${Body} event=${event} canWrite=${me.role !== "viewer"} onChange=${setEvent} />`;
}

function Body({ event, canWrite, onChange }) {
  const lookups = useLookups(event);
  return html`<div class="view" id="view-event" data-testid="view-event" data-id=${event.id}>
    <${Header} event=${event} />
    <div class="grid-main">
      <${Alarms} alarms=${event.alarms} />
      <${Triage} event=${event} canWrite=${canWrite} onChange=${onChange} />
    </div>
    <div class="grid2">
      <${Behavior} event=${event} />
      <${Graph} event=${event} lookups=${lookups} />
    </div>
    <div class="grid2">
      <${IntelMatches} event=${event} lookups=${lookups} />
      <${Context} event=${event} />
    </div>
    <${Flows} id=${event.id} />
  </div>`;
}

function Header({ event: e }) {
  return html`<div class="event-head" data-testid="event-head">
    <a class="back" href="#/events">← events</a>
    <div class="event-title">
      <${Risk} value=${e.risk} />
      <h1>
        <${Host} ip=${e.src_ip} /> <span class="arrow">→</span> <${Host} ip=${e.dst_ip} />
        <span class="mono muted">${service(e)}</span>
      </h1>
      <${Status} status=${e.status} verdict=${e.verdict} />
    </div>
    <div class="event-meta">
      <span>site <b>${e.site}</b></span>
      <span>${e.direction}</span>
      <span>${time(e.ts_start)} → ${time(e.ts_end)} UTC</span>
      <${Methods} methods=${e.methods} />
      <span class="muted mono">id ${e.id}</span>
    </div>
    <p class="reason-full" data-testid="event-reason">${e.reason}</p>
  </div>`;
}

/** Alarms grouped by method and name: the strongest one's explanation, all on demand. */
function Alarms({ alarms }) {
  const groups = useMemo(() => {
    const by = new Map();
    for (const a of alarms) {
      const k = `${a.method}|${a.name}`;
      if (!by.has(k)) by.set(k, []);
      by.get(k).push(a);
    }
    return [...by.values()]
      .map((list) => list.sort((a, b) => b.score - a.score))
      .sort((a, b) => b[0].score - a[0].score);
  }, [alarms]);
  return html`<${Card} title=${`Alarms (${alarms.length})`} id="event-alarms">
    ${groups.map((list) => html`<${AlarmGroup} key=${list[0].method} list=${list} />`)}
  <//>`;
}

function AlarmGroup({ list }) {
  const [open, setOpen] = useState(false);
  const a = list[0];
  const first = list.reduce((m, x) => (x.ts < m ? x.ts : m), a.ts);
  const last = list.reduce((m, x) => ((x.ts_end || x.ts) > m ? x.ts_end || x.ts : m), a.ts_end || a.ts);
  return html`<div class="alarm" data-testid="alarm" data-method=${a.method}>
    <div class="alarm-head">
      <${Methods} methods=${[a.method]} />
      <b>${a.name}</b>
      <span class="score" title="score 0-1">score <b>${num(a.score, 3)}</b></span>
      ${list.length > 1 ? html`<span class="muted">${list.length} alarms, ${time(first, false)} – ${time(last, false)}</span>` : html`<span class="muted">${time(a.ts)}</span>`}
    </div>
    <table class="explain">
      <tbody>
        <tr><th>observed</th><td>${a.observed}${a.observed_value !== null && a.observed_value !== undefined ? html` <span class="muted">(${num(a.observed_value)})</span>` : null}</td></tr>
        <tr><th>expected</th><td>${a.expected}${a.expected_value !== null && a.expected_value !== undefined ? html` <span class="muted">(${num(a.expected_value)})</span>` : null}</td></tr>
        ${a.threshold !== null && a.threshold !== undefined
          ? html`<tr><th>threshold</th><td>${num(a.threshold, 3)}</td></tr>`
          : null}
        <tr><th>reason</th><td>${a.reason}</td></tr>
      </tbody>
    </table>
    ${list.length > 1
      ? html`<button class="link" onClick=${() => setOpen(!open)}>
          ${open ? "hide" : "show"} all ${list.length} ${a.method} alarms</button>`
      : null}
    ${open
      ? html`<table class="table compact">
          <thead><tr><th>time</th><th>score</th><th>observed</th><th>reason</th></tr></thead>
          <tbody>
            ${list.slice(0, 500).map(
              (x) => html`<tr><td class="time">${time(x.ts)}</td><td class="num">${num(x.score, 3)}</td>
                <td>${x.observed}</td><td class="reason" title=${x.reason}>${x.reason}</td></tr>`,
            )}
          </tbody>
        </table>`
      : null}
  </div>`;
}

function Behavior({ event }) {
  const [horizon, setHorizon] = useState("1d");
  const [measure, setMeasure] = useState("bytes_out");
  const state = useApi(`/events/${event.id}/behavior`, { horizon });
  const mark = [ms(event.ts_start), ms(event.ts_end)];
  return html`<${Card} title="Behavior against its usual band" id="event-behavior"
    actions=${html`<select value=${measure} onChange=${(e) => setMeasure(e.target.value)}
        data-testid="behavior-measure">
        ${MEASURES.map(([v, t]) => html`<option value=${v}>${t}</option>`)}
      </select>
      <${Tabs} value=${horizon} options=${HORIZONS} onChange=${setHorizon} testid="behavior-horizon" />`}>
    <${Loaded} state=${state} what="behavior">
      ${(b) => html`<div class="muted small" data-testid="behavior-key">
          ${b.view} ${Object.entries(b.key || {}).map(([k, v]) => `${k}=${v}`).join(" ")} ·
          every ${b.resolution_s >= 3600 ? `${b.resolution_s / 3600} h` : `${b.resolution_s / 60} min`}
          · <span class="swatch obs"></span> observed <span class="swatch band"></span> usual
          (5th–95th percentile) <span class="swatch win"></span> this event</div>
        <${BehaviorChart} behavior=${b} measure=${measure} mark=${mark} height=${300}
          testid="behavior-chart" />`}
    <//>
  <//>`;
}

/**
 * What the event says about each address of its graph: the names DNS answered with it
 * before the event and, for external ones, where it is and its AS (from its ends, hop
 * nodes and relays; the first that knows wins).
 */
function aboutAddresses(e) {
  const about = new Map();
  const note = (ip, names, geo) => {
    if (!ip) return;
    const old = about.get(ip) || {};
    about.set(ip, { names: old.names?.length ? old.names : names || [], geo: old.geo || geo || null });
  };
  note(e.src_ip, e.src_names, e.src_geo);
  note(e.dst_ip, e.dst_names, e.dst_geo);
  for (const n of e.hops?.nodes || []) note(n.ip, n.names, n.geo);
  for (const r of e.relays || []) {
    const inbound = String(r.inbound || "").match(/^(.+?)→/);
    const outbound = String(r.outbound || "").match(/→(.+):\d+$/);
    note(inbound?.[1], r.inbound_names, r.inbound_geo);
    note(r.host, r.host_names, r.host_geo);
    note(outbound?.[1], r.outbound_names, r.outbound_geo);
  }
  return about;
}

/** Nodes and edges of an event: its pair, east-west hops, relays; risky marks; names. */
function eventGraph(e, listed) {
  const nodes = new Map();
  const about = aboutAddresses(e);
  const add = (ip, ring, extra = {}) => {
    if (!ip) return;
    const old = nodes.get(ip);
    const rank = { focus: 0, hop2: 1, hop3: 2, peer: 3 };
    const keep = old && rank[old.ring] <= rank[ring] ? old.ring : ring;
    const { names = [], geo = null } = about.get(ip) || {};
    const label = names.length ? `${ip}\n${names[0]}` : ip;
    nodes.set(ip, { id: ip, external: !isPrivate(ip), names, geo, label, ...old, ...extra, ring: keep });
  };
  const intelHit = e.alarms.some((a) => INTEL_METHODS.has(a.method));
  for (const ip of [e.src_ip, e.dst_ip]) {
    add(ip, "focus", intelHit && !isPrivate(ip) ? { risky: true } : {});
  }
  const edges = [{ source: e.src_ip, target: e.dst_ip, label: service(e), kind: "focus", weight: 1 }];
  const hops = e.hops || {};
  for (const n of hops.nodes || []) {
    const ring = n.role === "hop2" || n.role === "hop3" ? n.role : "focus";
    add(n.ip, ring, n.role === "risky" ? { risky: true, external: true } : {});
  }
  let top = 1;
  for (const h of hops.edges || []) top = Math.max(top, h.bytes || 1);
  for (const h of hops.edges || []) {
    add(h.src, `hop${h.hop}`);
    add(h.dst, `hop${h.hop}`);
    edges.push({
      source: h.src,
      target: h.dst,
      label: `${h.dst_port}/${proto(h.proto)}`,
      kind: "hop",
      weight: h.bytes || 1,
    });
  }
  for (const r of e.relays || []) {
    const inbound = String(r.inbound || "").match(/^(.+?)→(.+?):(\d+)$/);
    const outbound = String(r.outbound || "").match(/^(.+?)→(.+?):(\d+)$/);
    for (const m of [inbound, outbound]) {
      if (!m) continue;
      add(m[1], "hop2");
      add(m[2], "hop2");
      edges.push({ source: m[1], target: m[2], label: `relay :${m[3]}`, kind: "relay", weight: top });
    }
  }
  for (const ip of listed) if (nodes.has(ip)) nodes.get(ip).risky = true;
  return { nodes: [...nodes.values()], edges };
}

function Graph({ event, lookups }) {
  const listed = lookups.filter((l) => l.listed).map((l) => l.value);
  const key = listed.join();
  const { nodes, edges } = useMemo(() => eventGraph(event, listed), [event.id, key]);
  const hops = (event.hops?.edges || []).length;
  return html`<${Card} title="Communication graph" id="event-graph-card"
    actions=${html`<span class="muted small">${nodes.length} addresses · ${hops} east-west hop${hops === 1 ? "" : "s"}</span>`}>
    <${CommGraph} nodes=${nodes} edges=${edges} testid="event-graph" />
    <${GraphLegend} />
    ${nodes.length > 2 ? html`<${GraphNodes} nodes=${nodes} />` : null}
  <//>`;
}

const RING_NAMES = { focus: "the event's pair", hop2: "2nd hop", hop3: "3rd hop", peer: "peer" };

/** The graph's addresses with their names and location (the labels show the first name). */
function GraphNodes({ nodes }) {
  const order = { focus: 0, hop2: 1, hop3: 2, peer: 3 };
  const rows = [...nodes].sort((a, b) => order[a.ring] - order[b.ring] || a.id.localeCompare(b.id));
  return html`<div class="table-wrap short"><table class="table compact" data-testid="graph-nodes">
    <thead><tr><th>address</th><th>in the graph</th><th>names (DNS, before the event)</th><th>location · AS</th></tr></thead>
    <tbody>
      ${rows.map(
        (n) => html`<tr data-ip=${n.id}>
          <td><${Host} ip=${n.id} />${n.risky ? html` <span class="chip bad">risky</span>` : null}</td>
          <td>${RING_NAMES[n.ring] || n.ring}${n.external ? " · external" : ""}</td>
          <td class="names">${(n.names || []).join(", ")}</td>
          <td>${geo(n.geo)}</td>
        </tr>`,
      )}
    </tbody>
  </table></div>`;
}

/** Intel lookups of the event's public addresses (none when no intel is loaded). */
function useLookups(event) {
  const [found, setFound] = useState([]);
  useEffect(() => {
    let gone = false;
    const values = [event.src_ip, event.dst_ip].filter((ip) => !isPrivate(ip));
    (async () => {
      const intel = await api("/intel").catch(() => null);
      if (!intel?.loaded || gone) return;
      const out = [];
      for (const v of values) {
        try {
          out.push(await api("/intel/lookup", { params: { value: v } }));
        } catch {
          // not answerable: left out
        }
      }
      if (!gone) setFound(out);
    })();
    return () => {
      gone = true;
    };
  }, [event.id]);
  return found;
}

function IntelMatches({ event, lookups }) {
  const reasons = [...new Set(event.alarms.filter((a) => INTEL_METHODS.has(a.method)).map((a) => `${a.method}: ${a.reason}`))];
  return html`<${Card} title="Threat intelligence" id="event-intel">
    ${reasons.length
      ? html`<ul class="plain">${reasons.map((r) => html`<li>${r}</li>`)}</ul>`
      : html`<div class="muted">No intel alarm on this event.</div>`}
    ${lookups.map(
      (l) => html`<div class="lookup" data-testid="intel-lookup">
        <div><a class="ip" href=${href("intel", { value: l.value })}>${l.value}</a>
          ${l.listed
            ? html` <span class="chip bad">listed</span> reputation <b>${l.reputation}</b> / 100`
            : html` <span class="chip ok">not listed</span>`}</div>
        ${l.listed ? html`<${Evidence} rows=${l.evidence} />` : null}
      </div>`,
    )}
  <//>`;
}

export function Evidence({ rows }) {
  return html`<table class="table compact" data-testid="evidence">
    <thead><tr><th>feed</th><th>category</th><th>family</th><th>confidence</th><th>risk</th><th>first seen</th><th>last seen</th></tr></thead>
    <tbody>
      ${(rows || []).map(
        (r) => html`<tr><td>${r.feed}</td><td>${r.category}</td><td>${r.family}</td>
          <td class="num">${num(r.confidence)}</td><td class="num">${num(r.risk)}</td>
          <td class="time">${time(r.first_seen, false)}</td><td class="time">${time(r.last_seen, false)}</td></tr>`,
      )}
    </tbody>
  </table>`;
}

function geo(g) {
  if (!g) return "";
  if (typeof g === "string") return g;
  return [g.city, g.country, g.asn ? `AS${g.asn}` : "", g.as_org || g.org].filter(Boolean).join(", ");
}

function Context({ event: e }) {
  const names = (v) => (Array.isArray(v) ? v.join(", ") : v || "");
  return html`<${Card} title="Context" id="event-context">
    <${Facts} rows=${[
      ["source names", names(e.src_names)],
      ["destination names", names(e.dst_names)],
      ["source location", geo(e.src_geo)],
      ["destination location", geo(e.dst_geo)],
      ["source groups", (e.src_groups || []).join(", ")],
      ["destination groups", (e.dst_groups || []).join(", ")],
      ["guarded server", e.guarded ? "yes" : ""],
      ["service", e.service],
      ["flows", count(e.flows)],
      ["bytes (client → server)", e.src_bytes !== null && e.src_bytes !== undefined ? bytes(e.src_bytes) : ""],
      ["bytes (server → client)", e.dst_bytes !== null && e.dst_bytes !== undefined ? bytes(e.dst_bytes) : ""],
      ["window", `${time(e.window_start)} UTC`],
      ["event score", num(e.score, 3)],
      ["relays", (e.relays || []).length ? `${e.relays.length} (in the graph)` : ""],
    ]} />
  <//>`;
}

const CHOICES = [
  ["malicious", "Malicious"],
  ["needs_review", "Needs review"],
  ["benign", "Benign"],
];

function Triage({ event: e, canWrite, onChange }) {
  const [comment, setComment] = useState(e.comment || "");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  useFollow(e.comment || "", setComment);
  const patch = async (change) => {
    setBusy(true);
    setError(null);
    try {
      onChange(await api(`/events/${e.id}`, { method: "PATCH", body: change }));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<${Card} title="Triage" id="event-triage">
    <div class="triage-now" data-testid="triage-now">
      status <b data-testid="current-status">${label(e.status) || "new"}</b>${" · verdict "}
      <b data-testid="current-verdict">${label(e.verdict) || "none"}</b>
    </div>
    ${canWrite
      ? html`<div class="verdicts">
            ${CHOICES.map(
              ([v, t]) => html`<button class=${`verdict v-${v} ${e.verdict === v ? "on" : ""}`}
                disabled=${busy} data-testid=${`verdict-${v}`} aria-pressed=${e.verdict === v}
                onClick=${() => patch({ verdict: v })}>${t}</button>`,
            )}
          </div>
          <label class="row">status
            <select value=${e.status || "new"} disabled=${busy} data-testid="status-select"
              onChange=${(ev) => patch({ status: ev.target.value })}>
              <option value="new">new</option>
              <option value="investigating">investigating</option>
              <option value="closed">closed</option>
            </select>
          </label>
          <label class="stack">comment
            <textarea rows="3" maxlength="4000" value=${comment} data-testid="comment"
              onInput=${(ev) => setComment(ev.target.value)}></textarea>
          </label>
          <button disabled=${busy || comment === (e.comment || "")} data-testid="comment-save"
            onClick=${() => patch({ comment })}>Save comment</button>`
      : html`<div class="muted">Viewers read only.${e.comment ? html`<p>${e.comment}</p>` : null}</div>`}
    <${ErrorBox} error=${error} />
    <h3>History</h3>
    ${e.history.length
      ? html`<ul class="history" data-testid="history">
          ${[...e.history].reverse().map(
            (h) => html`<li>
              <span class="time">${time(h.ts)}</span>${" "}<b>${h.user}</b>${` set ${h.field} `}
              ${h.old_value && h.field !== "comment" ? html`<s>${label(h.old_value)}</s>${" → "}` : null}
              <b>${h.field === "comment" ? `“${h.new_value || ""}”` : label(h.new_value) || "none"}</b>
            </li>`,
          )}
        </ul>`
      : html`<div class="muted" data-testid="history-empty">No changes yet.</div>`}
  <//>`;
}

function Flows({ id }) {
  const state = useApi(`/events/${id}/flows`, { limit: 200 });
  return html`<${Card} title="Flows of the event" id="event-flows"
    actions=${state.data ? html`<span class="muted small">${state.data.count}${state.data.truncated ? "+" : ""} flows</span>` : null}>
    <${Loaded} state=${state} what="flows">
      ${(page) =>
        page.items.length
          ? html`<div class="table-wrap short"><table class="table compact" data-testid="flows-table">
              <thead><tr><th>start</th><th>end</th><th>client</th><th>server</th><th>proto</th>
                <th class="num">pkts →</th><th class="num">bytes →</th><th class="num">pkts ←</th><th class="num">bytes ←</th>
                <th>state</th><th>exporter</th></tr></thead>
              <tbody>
                ${page.items.map(
                  (f) => html`<tr>
                    <td class="time">${time(f.ts_start)}</td><td class="time">${time(f.ts_end)}</td>
                    <td class="mono">${f.src_ip}:${f.src_port}</td><td class="mono">${f.dst_ip}:${f.dst_port}</td>
                    <td>${proto(f.proto)}</td>
                    <td class="num">${count(f.src_pkts)}</td><td class="num">${bytes(f.src_bytes)}</td>
                    <td class="num">${count(f.dst_pkts)}</td><td class="num">${bytes(f.dst_bytes)}</td>
                    <td>${f.state || ""}</td><td class="mono">${f.exporter || ""}</td>
                  </tr>`,
                )}
              </tbody>
            </table></div>`
          : html`<div class="muted empty">No flows of this event in the archive.</div>`}
    <//>
  <//>`;
}
