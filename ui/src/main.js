// The flowhawk web UI: sign-in, then a shell (navigation, who is signed in, the event
// clock) around one view chosen by the address (#/events, #/events/<id>, #/hosts/<ip>...).
// Everything comes from the REST API under /api/v1 with the session's bearer token.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, session, whenSignedOut } from "./api.js";
import { time } from "./format.js";
import { html } from "./html.js";
import { href, useRoute } from "./router.js";
import "./styles.css";
import { Admin } from "./views/admin.js";
import { Dashboard } from "./views/dashboard.js";
import { EventView } from "./views/event.js";
import { Events } from "./views/events.js";
import { HostView, Hosts } from "./views/hosts.js";
import { Intel } from "./views/intel.js";
import { Operations } from "./views/operations.js";
import { SignIn } from "./views/signin.js";

const KIND = "flowhawk.kind";

function App() {
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(Boolean(session.token));
  useEffect(() => {
    whenSignedOut(() => setMe(null));
    if (!session.token) return;
    api("/me")
      .then(setMe)
      .catch(() => setMe(null))
      .finally(() => setChecking(false));
  }, []);
  if (checking) return html`<div class="center muted">Loading…</div>`;
  if (!me) {
    return html`<${SignIn}
      onSignedIn=${(who, kind) => {
        sessionStorage.setItem(KIND, kind);
        setMe(who);
      }}
    />`;
  }
  return html`<${Shell} me=${me} onSignOut=${() => signOut(setMe)} />`;
}

async function signOut(setMe) {
  // a session from user + password ends on the server too; a pasted API token is only
  // forgotten here (POST /logout would revoke it for every other client using it)
  if (sessionStorage.getItem(KIND) === "session") {
    try {
      await api("/logout", { method: "POST" });
    } catch {
      // already ended
    }
  }
  session.clear();
  sessionStorage.removeItem(KIND);
  setMe(null);
}

/**
 * The event clock: the newest flow detection has seen (event time), else the newest
 * event's end, else now. Time ranges ("last 24 h") count back from it, so replayed or
 * delayed data shows the same as live data.
 */
function useClock() {
  const [clock, setClock] = useState(null);
  useEffect(() => {
    let stop = false;
    const read = async () => {
      let t = null;
      try {
        const status = await api("/status");
        t = status?.detection?.newest_flow ?? null;
        if (!t) {
          const page = await api("/events", { params: { sort: "-ts_end", limit: 1 } });
          t = page.items[0]?.ts_end ?? null;
        }
      } catch {
        // keep the last one
      }
      if (!stop) setClock((old) => (t ? Date.parse(t) : old ?? Date.now()));
    };
    read();
    const timer = setInterval(read, 30000);
    return () => {
      stop = true;
      clearInterval(timer);
    };
  }, []);
  return clock;
}

const NAV = [
  ["dashboard", "Dashboard"],
  ["events", "Events"],
  ["hosts", "Hosts"],
  ["intel", "Intel"],
  ["operations", "Operations"],
];

function Shell({ me, onSignOut }) {
  const route = useRoute();
  const clock = useClock();
  const [first, second] = route.parts;
  const admin = me.role === "admin";
  const nav = admin ? [...NAV, ["admin", "Admin"]] : NAV;
  const section = first || "dashboard";
  return html`<div class="shell">
    <header class="top">
      <a class="brand" href="#/dashboard"><span class="logo">◆</span> flowhawk</a>
      <nav>
        ${nav.map(
          ([path, text]) =>
            html`<a href=${href(path)} class=${section === path ? "on" : ""}
              data-testid=${`nav-${path}`}>${text}</a>`,
        )}
      </nav>
      <div class="who" data-testid="who">
        ${clock
          ? html`<span class="clock" title="newest flow seen by detection (event time)"
              >event time ${time(new Date(clock), false)} UTC</span
            >`
          : null}
        <span class="user" data-testid="who-user">${me.user}</span>
        <span class="chip role-${me.role}" data-testid="who-role">${me.role}</span>
        <span class="sites" data-testid="who-sites"
          >${me.sites ? me.sites.join(", ") || "no sites" : "all sites"}</span
        >
        <button class="ghost" data-testid="sign-out" onClick=${onSignOut}>Sign out</button>
      </div>
    </header>
    <main>${view(section, second, route.params, me, clock)}</main>
  </div>`;
}

function view(section, arg, params, me, clock) {
  const props = { me, params, clock };
  switch (section) {
    case "dashboard":
      return html`<${Dashboard} ...${props} />`;
    case "events":
      return arg
        ? html`<${EventView} key=${arg} id=${arg} ...${props} />`
        : html`<${Events} ...${props} />`;
    case "hosts":
      return arg
        ? html`<${HostView} key=${arg} ip=${arg} ...${props} />`
        : html`<${Hosts} ...${props} />`;
    case "intel":
      return html`<${Intel} ...${props} />`;
    case "operations":
      return html`<${Operations} ...${props} />`;
    case "admin":
      return me.role === "admin"
        ? html`<${Admin} ...${props} />`
        : html`<div class="error">Only administrators see this page.</div>`;
    default:
      return html`<div class="error" data-testid="not-found">No such page: ${section}</div>`;
  }
}

render(html`<${App} />`, document.getElementById("app"));
