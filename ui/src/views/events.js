// The events table: filters (kept in the address), sorting by column, server-side
// paging, new events announced by the live stream (a banner, never moving the rows under
// the analyst's eyes), multi-select and bulk triage.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, BASE, follow, query, session } from "../api.js";
import { ErrorBox, Host, Methods, Pager, Risk, Status, useApi } from "../components.js";
import { iso, label, service, time, useDebounced } from "../format.js";
import { html } from "../html.js";
import { go } from "../router.js";
import { RANGES } from "./dashboard.js";

const FIELDS = ["range", "since", "until", "site", "min_risk", "method", "host", "status",
  "verdict", "direction", "sort", "limit"];
const STATUSES = ["new", "investigating", "closed"];
const VERDICTS = ["benign", "malicious", "needs_review"];
const COLUMNS = [
  ["risk", "risk", "-risk"],
  ["ts_start", "start (UTC)", "-ts_start"],
  ["site", "site", "site"],
  ["src_ip", "source", "src_ip"],
  ["dst_ip", "destination", "dst_ip"],
  [null, "service"],
  [null, "direction"],
  [null, "methods"],
  [null, "reason"],
  ["status", "triage", "status"],
];

function draftOf(params) {
  const d = Object.fromEntries(FIELDS.map((f) => [f, params.get(f) || ""]));
  if (!d.range) d.range = d.since || d.until ? "custom" : "all";
  return d;
}

const list = (v) => (v ? String(v).split(",").map((s) => s.trim()).filter(Boolean) : []);

/** The API's filter from a draft: `range` counts back from the event clock. */
function apiFilter(d, anchor) {
  const span = RANGES.find((r) => r[0] === d.range)?.[2];
  const since = d.range === "custom" ? d.since : span && anchor ? iso(anchor - span * 1000) : "";
  return {
    since: since || undefined,
    until: d.range === "custom" ? d.until || undefined : undefined,
    site: list(d.site),
    min_risk: d.min_risk,
    method: list(d.method).map((m) => m.toUpperCase()),
    host: d.host.trim(),
    status: list(d.status),
    verdict: list(d.verdict),
    direction: d.direction,
  };
}

export function Events({ me, params, clock }) {
  const urlKey = params.toString();
  const [draft, setDraft] = useState(() => draftOf(params));
  const pushed = useRef(urlKey);
  // a change of address from outside (a link, the back button) resets the form
  useEffect(() => {
    if (urlKey !== pushed.current) {
      pushed.current = urlKey;
      setDraft(draftOf(params));
    }
  }, [urlKey]);
  const offset = Number(params.get("offset") || 0);
  /** The address of a draft, unless it is already there (back to the first page). */
  const push = (d) => {
    const next = { ...d, range: d.range === "all" ? "" : d.range };
    if (d.range !== "custom") {
      next.since = "";
      next.until = "";
    }
    const p = new URLSearchParams();
    for (const f of FIELDS) if (next[f]) p.set(f, next[f]);
    const same = p.toString() === new URLSearchParams([...params].filter(([k]) => k !== "offset")).toString();
    if (!same) {
      pushed.current = p.toString();
      go("events", Object.fromEntries(p), true);
    }
  };
  // typing applies once it pauses; a choice (a list, a column header, clear) at once
  const settled = useDebounced(draft, 300);
  useEffect(() => push(settled), [settled]);
  const apply = (next) => {
    setDraft(next);
    push(next);
  };

  const d = draftOf(params);
  const anchor = useMemo(() => clock, [d.range, clock !== null]);
  const waiting = d.range !== "all" && d.range !== "custom" && anchor === null;
  const filter = apiFilter(d, anchor);
  const sort = d.sort || "-risk";
  const limit = Number(d.limit || 50);
  const [refresh, setRefresh] = useState(0);
  const page = useApi(waiting ? null : "/events", { ...filter, sort, limit, offset }, refresh);
  const sites = useApi("/sites");
  const stats = useApi("/events/stats", { bucket: 30 * 86400 });
  const methods = useMemo(
    () => [...new Set((stats.data?.series || []).map((r) => r.method))].sort(methodOrder),
    [stats.data],
  );

  const [selected, setSelected] = useState(new Set());
  useEffect(() => setSelected(new Set()), [urlKey]);
  const fresh = useFresh(waiting ? null : filter, page.data);
  const canWrite = me.role !== "viewer";

  const set = (k) => (e) => setDraft({ ...draft, [k]: e.target.value });
  const pick = (k) => (e) => apply({ ...draft, [k]: e.target.value });
  const setNow = (k, v) => setDraft({ ...draft, [k]: v });
  const nav = (changes) => {
    const p = Object.fromEntries(params);
    go("events", { ...p, ...changes }, true);
  };
  const reload = () => {
    fresh.clear();
    if (offset) nav({ offset: 0 });
    else setRefresh((n) => n + 1);
  };

  const items = page.data?.items || [];
  const allOnPage = items.length > 0 && items.every((e) => selected.has(e.id));
  const toggle = (id) => {
    const s = new Set(selected);
    if (s.has(id)) s.delete(id);
    else s.add(id);
    setSelected(s);
  };

  return html`<div class="view" id="view-events" data-testid="view-events">
    <div class="view-head">
      <h1>Events</h1>
      <div class="actions">
        <button class="ghost" onClick=${() => download(filter, "csv")} data-testid="export-csv">
          Export CSV</button>
        <button class="ghost" onClick=${() => download(filter, "jsonl")}>Export JSON lines</button>
      </div>
    </div>
    <form class="filters" data-testid="filters" onSubmit=${(e) => e.preventDefault()}>
      <label>time
        <select value=${draft.range} onChange=${pick("range")} data-testid="filter-range">
          ${RANGES.map(([v, t]) => html`<option value=${v}>${v === "all" ? "all time" : `last ${t}`}</option>`)}
          <option value="custom">custom…</option>
        </select>
      </label>
      ${draft.range === "custom"
        ? html`<label>since (UTC)<input type="datetime-local" step="1" value=${local(draft.since)}
              onInput=${(e) => setNow("since", utc(e.target.value))} data-testid="filter-since" /></label>
            <label>until (UTC)<input type="datetime-local" step="1" value=${local(draft.until)}
              onInput=${(e) => setNow("until", utc(e.target.value))} data-testid="filter-until" /></label>`
        : null}
      <label>site
        <select value=${draft.site} onChange=${pick("site")} data-testid="filter-site">
          <option value="">all in scope</option>
          ${draft.site && sites.data && !sites.data.some((s) => s.name === draft.site)
            ? html`<option value=${draft.site}>${siteLabel(draft.site, sites.data)}</option>`
            : null}
          ${(sites.data || []).map((s) => html`<option value=${s.name}>${s.name}</option>`)}
        </select>
      </label>
      <label>min risk
        <input type="number" min="0" max="100" step="1" class="narrow" value=${draft.min_risk}
          onInput=${set("min_risk")} data-testid="filter-min-risk" />
      </label>
      <label>method
        <select value=${draft.method} onChange=${pick("method")} data-testid="filter-method">
          <option value="">any</option>
          ${draft.method && !methods.includes(draft.method)
            ? html`<option value=${draft.method}>${draft.method}</option>`
            : null}
          ${methods.map((m) => html`<option value=${m}>${m}</option>`)}
        </select>
      </label>
      <label>host
        <input type="search" placeholder="address (either end)" value=${draft.host}
          onInput=${set("host")} data-testid="filter-host" />
      </label>
      <label>status
        <select value=${draft.status} onChange=${pick("status")} data-testid="filter-status">
          <option value="">any</option>
          ${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
          <option value="new,investigating">open</option>
        </select>
      </label>
      <label>verdict
        <select value=${draft.verdict} onChange=${pick("verdict")} data-testid="filter-verdict">
          <option value="">any</option>
          ${VERDICTS.map((s) => html`<option value=${s}>${label(s)}</option>`)}
        </select>
      </label>
      <label>direction
        <select value=${draft.direction} onChange=${pick("direction")} data-testid="filter-direction">
          <option value="">any</option>
          <option value="north-south">north-south</option>
          <option value="east-west">east-west</option>
          <option value="external">external</option>
        </select>
      </label>
      <button type="button" class="ghost" data-testid="filter-clear"
        onClick=${() => apply(draftOf(new URLSearchParams()))}>clear</button>
    </form>

    ${fresh.count > 0
      ? html`<button class="banner" data-testid="new-events-banner" onClick=${reload}>
          ${fresh.count} new event${fresh.count > 1 ? "s" : ""} — show</button>`
      : null}
    ${canWrite && selected.size
      ? html`<${BulkBar} ids=${[...selected]} onDone=${() => {
          setSelected(new Set());
          setRefresh((n) => n + 1);
        }} />`
      : null}
    <${ErrorBox} error=${page.error} />

    <div class="table-wrap">
      <table class=${`table events ${page.loading ? "stale" : ""}`} data-testid="events-table">
        <thead>
          <tr>
            ${canWrite
              ? html`<th class="check"><input type="checkbox" aria-label="select page"
                  checked=${allOnPage} data-testid="select-page"
                  onChange=${() => {
                    const s = new Set(selected);
                    for (const e of items) allOnPage ? s.delete(e.id) : s.add(e.id);
                    setSelected(s);
                  }} /></th>`
              : null}
            ${COLUMNS.map(([key, text, first]) => {
              if (!key) return html`<th>${text}</th>`;
              const on = sort.replace(/^-/, "") === key;
              const next = on ? (sort.startsWith("-") ? key : `-${key}`) : first;
              return html`<th class="sortable ${on ? "on" : ""}" data-testid=${`sort-${key}`}
                aria-sort=${on ? (sort.startsWith("-") ? "descending" : "ascending") : "none"}
                onClick=${() => apply({ ...draft, sort: next })}>
                ${text}${on ? (sort.startsWith("-") ? " ▼" : " ▲") : ""}</th>`;
            })}
          </tr>
        </thead>
        <tbody>
          ${items.map(
            (e) => html`<tr key=${e.id} data-id=${e.id} data-testid="event-row"
              class=${selected.has(e.id) ? "selected" : ""}
              onClick=${() => (location.hash = `#/events/${e.id}`)}>
              ${canWrite
                ? html`<td class="check" onClick=${(ev) => ev.stopPropagation()}>
                    <input type="checkbox" checked=${selected.has(e.id)} aria-label="select"
                      onChange=${() => toggle(e.id)} /></td>`
                : null}
              <td><${Risk} value=${e.risk} /></td>
              <td class="time"><a href=${`#/events/${e.id}`}>${time(e.ts_start)}</a></td>
              <td>${e.site}</td>
              <td><${Host} ip=${e.src_ip} /></td>
              <td><${Host} ip=${e.dst_ip} /></td>
              <td class="mono">${service(e)}</td>
              <td class="muted">${e.direction}</td>
              <td><${Methods} methods=${e.methods} /></td>
              <td class="reason" title=${e.reason}>${e.reason}</td>
              <td><${Status} status=${e.status} verdict=${e.verdict} /></td>
            </tr>`,
          )}
        </tbody>
      </table>
      ${page.data && !items.length
        ? html`<div class="muted empty" data-testid="no-events">No events match.</div>`
        : null}
      ${!page.data && !page.error ? html`<div class="muted loading">Loading events…</div>` : null}
    </div>
    <div class="table-foot">
      ${page.data
        ? html`<${Pager} total=${page.data.total} limit=${limit} offset=${offset}
            onOffset=${(o) => nav({ offset: o || "" })} />`
        : null}
      <label class="inline">rows
        <select value=${String(limit)} onChange=${(e) => apply({ ...draft, limit: e.target.value === "50" ? "" : e.target.value })}>
          ${[25, 50, 100, 200].map((n) => html`<option value=${String(n)}>${n}</option>`)}
        </select>
      </label>
    </div>
  </div>`;
}

/** A site filter from the address that the site list does not offer (typed or linked). */
function siteLabel(value, sites) {
  const mine = new Set(sites.map((s) => s.name));
  const asked = list(value);
  const others = asked.filter((s) => !mine.has(s));
  if (!others.length) return value;
  return others.length === asked.length
    ? `${value} (not in your sites)`
    : `${value} (not in your sites: ${others.join(", ")})`;
}

function methodOrder(a, b) {
  return a[0] === b[0] ? Number(a.slice(1)) - Number(b.slice(1)) : a < b ? -1 : 1;
}

/** Ids of events the live stream announced since the page was loaded. */
function useFresh(filter, page) {
  const [ids, setIds] = useState(new Set());
  const shown = useRef(new Set());
  shown.current = new Set((page?.items || []).map((e) => e.id));
  const key = filter ? JSON.stringify(filter) : null;
  useEffect(() => {
    setIds(new Set());
    if (key === null) return undefined;
    const { since, until, ...live } = filter;
    if (until) return undefined; // a closed range gets nothing new
    return follow(live, (doc) => {
      if (shown.current.has(doc.id)) return;
      setIds((old) => (old.has(doc.id) ? old : new Set([...old, doc.id])));
    });
  }, [key]);
  return { count: ids.size, clear: () => setIds(new Set()) };
}

function BulkBar({ ids, onDone }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const apply = async (change) => {
    setBusy(true);
    setError(null);
    try {
      await api("/events/bulk", { method: "POST", body: { ids, ...change } });
      onDone();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return html`<div class="bulkbar" data-testid="bulk-bar">
    <b>${ids.length} selected</b>
    <span class="muted">status</span>
    ${STATUSES.map(
      (s) => html`<button disabled=${busy} data-testid=${`bulk-status-${s}`}
        onClick=${() => apply({ status: s })}>${s}</button>`,
    )}
    <span class="muted">verdict</span>
    ${VERDICTS.map(
      (v) => html`<button disabled=${busy} data-testid=${`bulk-verdict-${v}`}
        class=${`v-${v}`} onClick=${() => apply({ verdict: v })}>${label(v)}</button>`,
    )}
    <button class="ghost" onClick=${onDone}>clear selection</button>
    <${ErrorBox} error=${error} />
  </div>`;
}

/** Downloads GET /events/export with the bearer token (a plain link cannot send it). */
async function download(filter, format) {
  const res = await fetch(`${BASE}/events/export${query({ ...filter, format })}`, {
    headers: { Authorization: `Bearer ${session.token}` },
  });
  if (!res.ok) return;
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `events.${format}`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** datetime-local works in local time without a zone: the filter is UTC, so convert. */
function local(isoValue) {
  return isoValue ? isoValue.replace(/Z$/, "").slice(0, 19) : "";
}

function utc(localValue) {
  return localValue ? `${localValue.length === 16 ? `${localValue}:00` : localValue}Z` : "";
}
