// Operations: the service's components and counters, exporters, sites in scope, webhook
// subscriptions and, for administrators, each output's delivery state.
import { Card, Loaded, useApi } from "../components.js";
import { count, time } from "../format.js";
import { html } from "../html.js";
import { ExporterTable, StatusFacts } from "./dashboard.js";

export function Operations({ me }) {
  const status = useApi("/status");
  const exporters = useApi("/exporters");
  const sites = useApi("/sites");
  return html`<div class="view" id="view-operations" data-testid="view-operations">
    <div class="view-head"><h1>Operations</h1>
      <button class="ghost" onClick=${() => { status.reload(); exporters.reload(); }}>refresh</button></div>
    <${Card} title="Collection and detection" id="ops-status">
      <${Loaded} state=${status} what="status">
        ${(s) => html`<${StatusFacts} status=${s} />
          <p class="muted small">started ${time(s.started)} UTC · newest flow seen by detection${" "}
            ${time(s.detection?.newest_flow) || "none yet"}${s.scoped ? null : ` · late flows ${count(s.detection?.late_flows || 0)}`}</p>
          ${(s.collector?.listen || []).length
            ? html`<p class="muted small">listening on ${s.collector.listen
                .map((l) => `${l.address} (udp ${l.udp_port})`)
                .join(", ")}</p>`
            : null}`}
      <//>
    <//>
    <div class="grid2">
      <${Card} title="Exporters" id="ops-exporters">
        <${Loaded} state=${exporters} what="exporters">${(list) => html`<${ExporterTable} exporters=${list} />`}<//>
      <//>
      <${Card} title="Sites" id="ops-sites">
        <${Loaded} state=${sites} what="sites">
          ${(list) => html`<table class="table compact" data-testid="sites-table">
            <thead><tr><th>site</th><th>networks</th><th>exporters</th></tr></thead>
            <tbody>
              ${list.map(
                (s) => html`<tr><td>${s.name}${s.default ? html` <span class="chip">default</span>` : null}</td>
                  <td class="mono">${(s.networks || []).join(", ")}</td>
                  <td class="mono">${(s.exporters || []).join(", ")}</td></tr>`,
              )}
            </tbody>
          </table>`}
        <//>
      <//>
    </div>
    <${Subscriptions} me=${me} />
    ${me.role === "admin" ? html`<${Outputs} status=${status.data} />` : null}
  </div>`;
}

/** Webhook subscriptions: the caller's own (an admin sees everyone's), never a secret. */
function Subscriptions({ me }) {
  const subs = useApi("/subscriptions");
  const admin = me.role === "admin";
  return html`<${Card} title=${admin ? "Webhook subscriptions" : "Your webhook subscriptions"}
    id="ops-subscriptions">
    <${Loaded} state=${subs} what="subscriptions">
      ${(list) =>
        list.length
          ? html`<table class="table compact" data-testid="subscriptions-table">
              <thead><tr><th>id</th><th>url</th><th>sites</th><th class="num">min risk</th>
                <th>methods</th>${admin ? html`<th>owner</th>` : null}<th>created</th></tr></thead>
              <tbody>
                ${list.map(
                  (x) => html`<tr data-id=${x.id}>
                    <td class="mono">${x.id}</td><td class="mono">${x.url}</td>
                    <td>${(x.sites || []).join(", ") || "all in scope"}</td>
                    <td class="num">${x.min_risk}</td><td>${(x.methods || []).join(", ") || "any"}</td>
                    ${admin ? html`<td>${x.owner}</td>` : null}<td class="time">${time(x.created)}</td>
                  </tr>`,
                )}
              </tbody>
            </table>`
          : html`<div class="muted">No webhook subscriptions: POST /api/v1/subscriptions adds
              one (a URL, the sites, a minimum risk and methods).</div>`}
    <//>
  <//>`;
}

function Outputs() {
  const outputs = useApi("/outputs");
  return html`<${Card} title="Outputs" id="ops-outputs">
    <${Loaded} state=${outputs} what="outputs">
      ${(list) =>
        list.length
          ? html`<table class="table compact" data-testid="outputs-table">
              <thead><tr>${Object.keys(list[0]).map((k) => html`<th>${k.replace(/_/g, " ")}</th>`)}</tr></thead>
              <tbody>
                ${list.map(
                  (o) => html`<tr>${Object.values(o).map((v) => html`<td>${cell(v)}</td>`)}</tr>`,
                )}
              </tbody>
            </table>`
          : html`<div class="muted">No outputs configured: events stay in the store and the API.</div>`}
    <//>
  <//>`;
}

function cell(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return typeof v === "number" ? count(v) : String(v);
}
