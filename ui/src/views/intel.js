// Threat intelligence: what is loaded (version, feeds) and a lookup box for an address,
// a domain or a URL, with the reputation and every feed's evidence.
import { useState } from "preact/hooks";
import { Card, Loaded, useApi, useFollow } from "../components.js";
import { count, time } from "../format.js";
import { html } from "../html.js";
import { go } from "../router.js";
import { Evidence } from "./event.js";

export function Intel({ params }) {
  const status = useApi("/intel");
  const asked = params.get("value") || "";
  const [value, setValue] = useState(asked);
  useFollow(asked, setValue);
  const loaded = status.data?.loaded;
  const result = useApi(asked && loaded ? "/intel/lookup" : null, { value: asked });
  return html`<div class="view" id="view-intel" data-testid="view-intel">
    <div class="view-head"><h1>Threat intelligence</h1></div>
    <div class="grid2">
      <${Card} title="Lookup" id="intel-lookup">
        <form class="lookup-form" onSubmit=${(e) => {
          e.preventDefault();
          go("intel", { value: value.trim() });
        }}>
          <input type="search" placeholder="address, domain or URL" value=${value}
            data-testid="intel-value" onInput=${(e) => setValue(e.target.value)} />
          <button class="primary" type="submit" disabled=${!loaded} data-testid="intel-submit">Look up</button>
        </form>
        ${asked && loaded
          ? html`<${Loaded} state=${result} what="the lookup">
              ${(r) => html`<div class="lookup" data-testid="intel-result">
                <div><b class="mono">${r.value}</b> (${r.kind})
                  ${r.listed
                    ? html` <span class="chip bad">listed</span> reputation <b>${r.reputation}</b> / 100 (lower is riskier)`
                    : html` <span class="chip ok">not listed</span>`}</div>
                ${r.listed ? html`<${Evidence} rows=${r.evidence} />` : null}
              </div>`}
            <//>`
          : null}
        ${status.data && !loaded ? html`<div class="muted">No intelligence is loaded.</div>` : null}
      <//>
      <${Card} title="Loaded intelligence" id="intel-status">
        <${Loaded} state=${status} what="intel">
          ${(s) =>
            s.loaded
              ? html`<p>version <b class="mono">${s.version}</b> · ${count(s.indicators)} indicators ·
                    as of ${time(s.as_of)} UTC</p>
                  <table class="table compact" data-testid="feeds-table">
                    <thead><tr><th>feed</th><th>format</th><th class="num">indicators</th><th>version</th><th>loaded</th></tr></thead>
                    <tbody>
                      ${s.feeds.map(
                        (f) => html`<tr><td>${f.name}</td><td>${f.format}</td><td class="num">${count(f.indicators)}</td>
                          <td class="mono">${f.version}</td><td class="time">${time(f.loaded_at)}</td></tr>`,
                      )}
                    </tbody>
                  </table>`
              : html`<div class="muted">No feeds: set [intel] feeds or run flowhawk intel update.</div>`}
        <//>
      <//>
    </div>
  </div>`;
}
