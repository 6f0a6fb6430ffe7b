// Administration: event routing policies (which events go to which outputs), users and
// API tokens (a new token is shown once, then only its id).
import { useEffect, useState } from "preact/hooks";
import { api } from "../api.js";
import { Card, ErrorBox, Loaded, useApi } from "../components.js";
import { time } from "../format.js";
import { html } from "../html.js";

export function Admin() {
  return html`<div class="view" id="view-admin" data-testid="view-admin">
    <div class="view-head"><h1>Administration</h1></div>
    <${Policies} />
    <div class="grid2">
      <${Tokens} />
      <${Users} />
    </div>
  </div>`;
}

const csv = (v) => v.split(",").map((s) => s.trim()).filter(Boolean);

function Policies() {
  const state = useApi("/policies");
  const outputs = useApi("/outputs");
  const [routes, setRoutes] = useState(null);
  const [error, setError] = useState(null);
  const [saved, setSaved] = useState(false);
  useEffect(() => {
    if (state.data) setRoutes(state.data.routes);
  }, [state.data]);
  const names = (outputs.data || []).map((o) => o.name).filter(Boolean);
  const edit = (i, k, v) => {
    setSaved(false);
    setRoutes(routes.map((r, j) => (j === i ? { ...r, [k]: v } : r)));
  };
  const save = async () => {
    setError(null);
    try {
      const body = await api("/policies", { method: "PUT", body: { routes } });
      setRoutes(body.routes);
      setSaved(true);
    } catch (e) {
      setError(e);
    }
  };
  return html`<${Card} title="Routing policies" id="admin-policies"
    actions=${html`<span class="muted small">outputs: ${names.join(", ") || "none configured"}</span>`}>
    <${ErrorBox} error=${state.error} />
    ${routes === null
      ? null
      : html`<p class="muted small">Each route sends the events that match all of its conditions
            to its outputs (none: every output). Without routes, every event goes everywhere.</p>
          <table class="table compact form" data-testid="routes-table">
            <thead><tr><th>name</th><th>outputs</th><th>min risk</th><th>methods</th><th>sites</th><th></th></tr></thead>
            <tbody>
              ${routes.length
                ? null
                : html`<tr><td colspan="6" class="muted">No routes: every event goes to every output.</td></tr>`}
              ${routes.map(
                (r, i) => html`<tr data-testid="route-row">
                  <td><input value=${r.name} onInput=${(e) => edit(i, "name", e.target.value)} /></td>
                  <td><input value=${r.outputs.join(", ")} placeholder="all"
                    onChange=${(e) => edit(i, "outputs", csv(e.target.value))} /></td>
                  <td><input type="number" min="0" max="100" class="narrow" value=${r.min_risk}
                    onInput=${(e) => edit(i, "min_risk", Number(e.target.value || 0))} /></td>
                  <td><input value=${r.methods.join(", ")} placeholder="any"
                    onChange=${(e) => edit(i, "methods", csv(e.target.value).map((m) => m.toUpperCase()))} /></td>
                  <td><input value=${r.sites.join(", ")} placeholder="any"
                    onChange=${(e) => edit(i, "sites", csv(e.target.value))} /></td>
                  <td><button class="ghost" onClick=${() => setRoutes(routes.filter((_, j) => j !== i))}>remove</button></td>
                </tr>`,
              )}
            </tbody>
          </table>
          <div class="row-actions">
            <button onClick=${() => setRoutes([...routes, { name: "route", outputs: [], min_risk: 0, methods: [], sites: [] }])}
              data-testid="route-add">add route</button>
            <button class="primary" onClick=${save} data-testid="routes-save">save policies</button>
            ${saved ? html`<span class="ok-text" data-testid="routes-saved">saved</span>` : null}
          </div>
          <${ErrorBox} error=${error} />`}
  <//>`;
}

function Tokens() {
  const [tick, setTick] = useState(0);
  const tokens = useApi("/tokens", null, tick);
  const users = useApi("/users");
  const [form, setForm] = useState({ user: "", label: "", days: "" });
  const [created, setCreated] = useState(null);
  const [error, setError] = useState(null);
  const [confirm, setConfirm] = useState(null);
  useEffect(() => {
    if (users.data?.length && !form.user) setForm((f) => ({ ...f, user: users.data[0].name }));
  }, [users.data]);
  const create = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const body = { user: form.user, label: form.label };
      if (form.days) body.expires_days = Number(form.days);
      setCreated(await api("/tokens", { method: "POST", body }));
      setForm({ ...form, label: "", days: "" });
      setTick((n) => n + 1);
    } catch (err) {
      setError(err);
    }
  };
  const revoke = async (id) => {
    setError(null);
    try {
      await api(`/tokens/${id}`, { method: "DELETE" });
      setConfirm(null);
      setTick((n) => n + 1);
    } catch (err) {
      setError(err);
    }
  };
  return html`<${Card} title="API tokens" id="admin-tokens">
    <form class="inline-form" onSubmit=${create} data-testid="token-form">
      <select value=${form.user} onChange=${(e) => setForm({ ...form, user: e.target.value })}
        data-testid="token-user">
        ${(users.data || []).map((u) => html`<option value=${u.name}>${u.name} (${u.role})</option>`)}
      </select>
      <input placeholder="label" value=${form.label} maxlength="200" data-testid="token-label"
        onInput=${(e) => setForm({ ...form, label: e.target.value })} />
      <input type="number" min="1" max="3650" placeholder="expires (days)" class="narrow"
        value=${form.days} onInput=${(e) => setForm({ ...form, days: e.target.value })} />
      <button class="primary" type="submit" data-testid="token-create">create token</button>
    </form>
    ${created
      ? html`<div class="secret" data-testid="token-created">
          <div>New token for <b>${created.user}</b> — shown once, copy it now:</div>
          <code data-testid="token-value">${created.token}</code>
          <button class="ghost" onClick=${() => navigator.clipboard?.writeText(created.token)}>copy</button>
          <button class="ghost" onClick=${() => setCreated(null)}>done</button>
        </div>`
      : null}
    <${ErrorBox} error=${error} />
    <${Loaded} state=${tokens} what="tokens">
      ${(list) => html`<table class="table compact" data-testid="tokens-table">
        <thead><tr><th>id</th><th>user</th><th>label</th><th>kind</th><th>created</th><th>expires</th><th>state</th><th></th></tr></thead>
        <tbody>
          ${list.map(
            (t) => html`<tr data-token=${t.id}>
              <td class="mono">${t.id}</td><td>${t.user}</td><td>${t.label}</td><td>${t.kind}</td>
              <td class="time">${time(t.created, false)}</td><td class="time">${time(t.expires, false) || "never"}</td>
              <td>${t.revoked ? html`<span class="chip bad">revoked</span>` : t.expired ? html`<span class="chip">expired</span>` : html`<span class="chip ok">active</span>`}</td>
              <td>${t.revoked
                ? null
                : confirm === t.id
                  ? html`<button class="danger" data-testid="token-revoke-confirm" onClick=${() => revoke(t.id)}>revoke now</button>
                      <button class="ghost" onClick=${() => setConfirm(null)}>keep</button>`
                  : html`<button class="ghost" data-testid="token-revoke" onClick=${() => setConfirm(t.id)}>revoke</button>`}</td>
            </tr>`,
          )}
        </tbody>
      </table>`}
    <//>
  <//>`;
}

function Users() {
  const users = useApi("/users");
  return html`<${Card} title="Users" id="admin-users">
    <${Loaded} state=${users} what="users">
      ${(list) => html`<table class="table compact" data-testid="users-table">
        <thead><tr><th>user</th><th>role</th><th>sites</th><th>password</th><th class="num">tokens</th><th class="num">sessions</th><th>created</th></tr></thead>
        <tbody>
          ${list.map(
            (u) => html`<tr class=${u.disabled ? "muted" : ""}>
              <td>${u.name}</td><td><span class=${`chip role-${u.role}`}>${u.role}</span></td>
              <td>${(u.sites || []).join(", ") || "all"}</td><td>${u.password ? "set" : "—"}</td>
              <td class="num">${u.tokens}</td><td class="num">${u.sessions}</td>
              <td class="time">${time(u.created, false)}</td>
            </tr>`,
          )}
        </tbody>
      </table>
      <p class="muted small">Users are added with <code>flowhawk users add</code> on the server.</p>`}
    <//>
  <//>`;
}
