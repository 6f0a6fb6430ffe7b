// Sign-in: user + password (POST /login gives a session token) or a pasted API token.
import { useState } from "preact/hooks";
import { api, session } from "../api.js";
import { html } from "../html.js";

export function SignIn({ onSignedIn }) {
  const [mode, setMode] = useState("password");
  const [user, setUser] = useState("");
  const [password, setPassword] = useState("");
  const [token, setToken] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  async function submit(ev) {
    ev.preventDefault();
    setBusy(true);
    setError(null);
    try {
      let kind = "token";
      if (mode === "password") {
        const s = await api("/login", {
          method: "POST",
          body: { user: user.trim(), password },
          auth: false,
        });
        session.set(s.token);
        kind = "session";
      } else {
        session.set(token.trim());
      }
      const me = await api("/me", { auth: false });
      onSignedIn(me, kind);
    } catch (e) {
      session.clear();
      setError(
        e.status === 401
          ? mode === "password"
            ? "Wrong user or password."
            : "This token is not valid (unknown, revoked or expired)."
          : e.message,
      );
    } finally {
      setBusy(false);
    }
  }

  return html`<div class="signin" id="view-signin" data-testid="view-signin">
    <form class="signin-box" onSubmit=${submit}>
      <h1><span class="logo">◆</span> flowhawk</h1>
      <p class="muted">Network behavioral analytics</p>
      <div class="tabs" role="tablist">
        <button type="button" class=${mode === "password" ? "on" : ""}
          data-testid="signin-mode-password" onClick=${() => setMode("password")}>
          User + password
        </button>
        <button type="button" class=${mode === "token" ? "on" : ""}
          data-testid="signin-mode-token" onClick=${() => setMode("token")}>
          API token
        </button>
      </div>
      ${mode === "password"
        ? html`<label>User
              <input name="user" autocomplete="username" required value=${user}
                data-testid="signin-user" onInput=${(e) => setUser(e.target.value)} />
            </label>
            <label>Password
              <input name="password" type="password" autocomplete="current-password" required
                value=${password} data-testid="signin-password"
                onInput=${(e) => setPassword(e.target.value)} />
            </label>`
        : html`<label>Token
            <input name="token" type="password" autocomplete="off" required
              placeholder="fh_…" value=${token} data-testid="signin-token"
              onInput=${(e) => setToken(e.target.value)} />
          </label>`}
      ${error ? html`<div class="error" role="alert" data-testid="signin-error">${error}</div>` : null}
      <button class="primary" type="submit" disabled=${busy} data-testid="signin-submit">
        ${busy ? "Signing in…" : "Sign in"}
      </button>
    </form>
  </div>`;
}
