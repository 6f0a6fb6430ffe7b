// Hash routing (#/events?min_risk=60): the server only ever serves index.html, links
// and the back button work, and a view's filters live in its address.
import { useEffect, useState } from "preact/hooks";

function parse() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(search) };
}

export function useRoute() {
  const [route, setRoute] = useState(parse);
  useEffect(() => {
    const on = () => setRoute(parse());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

/** The address of a view: href("events", {min_risk: 60}) -> "#/events?min_risk=60". */
export function href(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return `#/${path}${s ? `?${s}` : ""}`;
}

/** Changes the address; `replace` keeps filter edits out of the back-button history. */
export function go(path, params, replace = false) {
  const to = href(path, params);
  if (replace) history.replaceState(null, "", to);
  else location.hash = to.slice(1);
  if (replace) dispatchEvent(new HashChangeEvent("hashchange"));
}
