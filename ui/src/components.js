// Small shared pieces: data loading, cards, badges, paging.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api } from "./api.js";
import { band, label } from "./format.js";
import { html } from "./html.js";
import { href } from "./router.js";

/**
 * GET `path` with `params` whenever either (or `refresh`) changes, the previous request
 * aborted; `path` null waits. Returns { data, error, loading, reload }.
 */
export function useApi(path, params, refresh = 0) {
  const key = path === null ? null : `${path}${JSON.stringify(params || {})}#${refresh}`;
  const [state, setState] = useState({ data: null, error: null, loading: path !== null });
  const [tick, setTick] = useState(0);
  const live = useRef(true);
  useEffect(() => () => (live.current = false), []);
  useEffect(() => {
    if (key === null) return undefined;
    const ctl = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    api(path, { params, signal: ctl.signal }).then(
      (data) => live.current && setState({ data, error: null, loading: false }),
      (error) => {
        if (error.name !== "AbortError" && live.current) {
          setState({ data: null, error, loading: false });
        }
      },
    );
    return () => ctl.abort();
  }, [key, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

/** Calls `set(value)` when `value` changes after the first render (a form following its
 * source without overwriting what was typed before the first effect ran). */
export function useFollow(value, set) {
  const last = useRef(value);
  useEffect(() => {
    if (last.current !== value) {
      last.current = value;
      set(value);
    }
  }, [value]);
}

export function Card({ title, id, actions, children, class: cls = "" }) {
  return html`<section class="card ${cls}" id=${id} data-testid=${id}>
    ${title || actions
      ? html`<header class="card-head"><h2>${title}</h2><div class="actions">${actions}</div></header>`
      : null}
    <div class="card-body">${children}</div>
  </section>`;
}

export function Loading({ what = "" }) {
  return html`<div class="muted loading">Loading${what ? ` ${what}` : ""}…</div>`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">${error.message || String(error)}</div>`;
}

/** Loading / error / the content, for a useApi() state. */
export function Loaded({ state, children, what }) {
  if (state.error) return html`<${ErrorBox} error=${state.error} />`;
  if (!state.data) return html`<${Loading} what=${what} />`;
  return children(state.data);
}

export function Risk({ value }) {
  const v = Number(value || 0);
  return html`<span class="risk risk-${band(v)}" title="risk ${v.toFixed(1)} / 100"
    >${Math.round(v)}</span
  >`;
}

export function RiskBar({ value }) {
  const v = Math.max(0, Math.min(100, Number(value || 0)));
  return html`<span class="riskbar"
    ><span class="riskbar-fill risk-${band(v)}" style=${`width:${v}%`}></span
    ><span class="riskbar-text">${v.toFixed(1)}</span></span
  >`;
}

export function Methods({ methods }) {
  const list = Array.isArray(methods) ? methods : String(methods || "").split(";").filter(Boolean);
  return html`<span class="methods"
    >${list.map((m) => html`<span class="chip method m-${m[0]}">${m}</span>`)}</span
  >`;
}

export function Status({ status, verdict }) {
  return html`<span class="triage">
    ${status ? html`<span class="chip status-${status}">${label(status)}</span>` : null}
    ${verdict ? html`<span class="chip verdict-${verdict}">${label(verdict)}</span>` : null}
  </span>`;
}

export function Host({ ip }) {
  if (!ip || ip === "*") return html`<span class="ip muted">${ip || "—"}</span>`;
  return html`<a class="ip" href=${href(`hosts/${ip}`)} onClick=${(e) => e.stopPropagation()}
    >${ip}</a
  >`;
}

export function Pager({ total, limit, offset, onOffset }) {
  const last = Math.max(0, Math.floor((Math.max(total, 1) - 1) / limit) * limit);
  const from = total ? offset + 1 : 0;
  const to = Math.min(offset + limit, total);
  return html`<div class="pager" data-testid="pager">
    <button disabled=${offset === 0} onClick=${() => onOffset(0)} title="first page">«</button>
    <button disabled=${offset === 0} onClick=${() => onOffset(Math.max(0, offset - limit))}>
      ‹ prev
    </button>
    <span class="pager-text" data-testid="pager-text">
      ${from.toLocaleString("en-US")}–${to.toLocaleString("en-US")} of${" "}
      <b data-testid="total">${total.toLocaleString("en-US")}</b>
    </span>
    <button disabled=${to >= total} onClick=${() => onOffset(offset + limit)}>next ›</button>
    <button disabled=${to >= total} onClick=${() => onOffset(last)} title="last page">»</button>
  </div>`;
}

export function Tabs({ value, options, onChange, testid }) {
  return html`<div class="tabs" role="tablist" data-testid=${testid}>
    ${options.map(
      ([v, text]) =>
        html`<button role="tab" aria-selected=${v === value} class=${v === value ? "on" : ""}
          data-value=${v} onClick=${() => onChange(v)}>${text}</button>`,
    )}
  </div>`;
}

export const HORIZONS = [
  ["1d", "1 day"],
  ["7d", "7 days"],
  ["30d", "30 days"],
];

/** A definition list from [label, value] pairs, leaving out empty values. */
export function Facts({ rows }) {
  const shown = rows.filter(([, v]) => v !== null && v !== undefined && v !== "" && v !== false);
  return html`<dl class="facts">
    ${shown.map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`)}
  </dl>`;
}
