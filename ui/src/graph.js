// Communication graphs on Cytoscape.js: nodes are addresses, edges communications.
// Rings by distance from the event (its own pair in the middle, 2nd then 3rd east-west
// hops around it); external addresses are diamonds, risky ones (listed by intel, M27/M29)
// red; the event's own communication is the thick amber edge. A tap on a node opens the
// host's profile.
import cytoscape from "cytoscape";
import { useEffect, useRef } from "preact/hooks";
import { html } from "./html.js";
import { go } from "./router.js";

const RINGS = ["peer", "hop2", "hop3"];

/**
 * Positions, the same every time: the focus node in the middle (the event's internal
 * side), the event's other side to its right; then rings of peers, 2nd and 3rd hops
 * around the middle, on the left half when the right holds the event's other side,
 * else internal addresses left and external ones right.
 */
function place(nodes, edges) {
  const pos = {};
  const focus = nodes.filter((n) => n.ring === "focus");
  const center = focus.find((n) => !n.external && !n.risky) || focus[0];
  if (!center) return pos;
  pos[center.id] = { x: 0, y: 0 };
  const others = focus.filter((n) => n !== center);
  others.forEach((n, i) => {
    pos[n.id] = { x: 260, y: (i - (others.length - 1) / 2) * 90 };
  });
  const deg = Math.PI / 180;
  let k = 0;
  for (const ring of RINGS) {
    const members = nodes
      .filter((n) => n.ring === ring)
      .sort((a, b) => Number(a.external) - Number(b.external) || a.id.localeCompare(b.id));
    if (!members.length) continue;
    k += 1;
    const arcs = [];
    if (others.length) arcs.push([members, 105 * deg, 255 * deg]);
    else {
      const inside = members.filter((n) => !n.external);
      const outside = members.filter((n) => n.external);
      if (!inside.length || !outside.length) arcs.push([members, 0, 360 * deg]);
      else arcs.push([inside, 95 * deg, 265 * deg], [outside, -85 * deg, 85 * deg]);
    }
    if (ring === "hop3") {
      aroundParents(members, edges, pos, 170 * k);
      continue;
    }
    for (const [group, from, to] of arcs) {
      const span = to - from;
      const full = span >= 359 * deg;
      const slots = full ? group.length : Math.max(1, group.length - 1);
      const radius = Math.max(170 * k, (group.length * 48) / span);
      group.forEach((n, i) => {
        const a = group.length === 1 && !full ? (from + to) / 2 : from + (span * i) / slots;
        pos[n.id] = { x: radius * Math.cos(a), y: radius * Math.sin(a) };
      });
    }
  }
  return pos;
}

const STYLE = [
  {
    selector: "node",
    style: {
      "background-color": "#64748b",
      label: "data(label)",
      color: "#cbd5e1",
      "font-size": 10,
      "text-wrap": "wrap",
      "text-max-width": 180,
      "text-valign": "bottom",
      "text-margin-y": 4,
      width: 18,
      height: 18,
      "border-width": 2,
      "border-color": "#0b1220",
    },
  },
  { selector: "node[ring = 'focus']", style: { width: 28, height: 28, "background-color": "#38bdf8" } },
  { selector: "node[ring = 'hop2'], node[ring = 'peer']", style: { "background-color": "#2dd4bf" } },
  { selector: "node[ring = 'hop3']", style: { "background-color": "#475569", width: 14, height: 14 } },
  { selector: "node[?external]", style: { shape: "diamond", "background-color": "#a78bfa" } },
  {
    selector: "node[?risky]",
    style: { "background-color": "#ef4444", "border-color": "#fecaca", "border-width": 3 },
  },
  {
    selector: "edge",
    style: {
      width: "data(width)",
      "line-color": "#475569",
      "target-arrow-color": "#475569",
      "target-arrow-shape": "triangle",
      "arrow-scale": 0.8,
      "curve-style": "bezier",
      label: "data(label)",
      "font-size": 9,
      color: "#94a3b8",
      "text-rotation": "autorotate",
      "text-background-color": "#0b1220",
      "text-background-opacity": 0.8,
      "text-background-padding": 1,
    },
  },
  { selector: "edge[kind = 'relay']", style: { "line-style": "dashed", "line-color": "#a78bfa" } },
  {
    selector: "edge[kind = 'focus']",
    style: { "line-color": "#f59e0b", "target-arrow-color": "#f59e0b", width: 4 },
  },
  { selector: ":selected", style: { "border-color": "#fde047", "line-color": "#fde047" } },
];

/**
 * `nodes`: [{ id, ring: focus|peer|hop2|hop3, external, risky, label (default: id) }];
 * `edges`: [{ source, target, label, kind: focus|hop|relay|comm, weight }].
 */
/** 3rd hops on an outer ring, each group fanned out behind the 2nd hop it reached. */
function aroundParents(members, edges, pos, radius) {
  const groups = new Map();
  for (const n of members) {
    const e = edges.find((x) => (x.source === n.id && pos[x.target]) || (x.target === n.id && pos[x.source]));
    const parent = e ? (e.source === n.id ? e.target : e.source) : null;
    if (!groups.has(parent)) groups.set(parent, []);
    groups.get(parent).push(n);
  }
  for (const [parent, group] of groups) {
    const p = parent ? pos[parent] : { x: -1, y: 0 };
    const mid = Math.atan2(p.y, p.x);
    const r = Math.max(radius, Math.hypot(p.x, p.y) + 150);
    const width = Math.min(1.6 * Math.PI, (group.length * 44) / r);
    group.forEach((n, i) => {
      const a = mid - width / 2 + (group.length > 1 ? (width * i) / (group.length - 1) : width / 2);
      pos[n.id] = { x: r * Math.cos(a), y: r * Math.sin(a) };
    });
  }
}

export function CommGraph({ nodes, edges, height = 380, testid }) {
  const box = useRef(null);
  useEffect(() => {
    const max = Math.max(1, ...edges.map((e) => e.weight || 1));
    const cy = cytoscape({
      container: box.current,
      style: STYLE,
      elements: [
        ...nodes.map((n) => ({
          data: { ...n, label: n.label || n.id, external: !!n.external, risky: !!n.risky },
        })),
        ...edges.map((e, i) => ({
          data: {
            id: `e${i}`,
            ...e,
            label: e.kind === "focus" || edges.length <= 12 ? e.label : "",
            width: 1 + 3 * Math.sqrt((e.weight || 1) / max),
          },
        })),
      ],
      layout: { name: "preset", positions: place(nodes, edges), fit: true, padding: 30 },
      minZoom: 0.2,
      maxZoom: 3,
    });
    if (cy.zoom() > 1.3) {
      cy.zoom(1.3);
      cy.center();
    }
    cy.on("tap", "node", (ev) => {
      const ip = ev.target.id();
      if (ip && ip !== "*") go(`hosts/${ip}`);
    });
    return () => cy.destroy();
  }, [nodes, edges]);
  return html`<div class="graph" ref=${box} style=${`height:${height}px`} data-testid=${testid}></div>`;
}

export function GraphLegend({ host = false }) {
  return html`<div class="legend">
    ${host
      ? html`<span><i class="dot" style="background:#38bdf8"></i>this host</span>
          <span><i class="dot" style="background:#2dd4bf"></i>internal peer</span>`
      : html`<span><i class="dot" style="background:#38bdf8"></i>the event's pair</span>
          <span><i class="dot" style="background:#2dd4bf"></i>2nd hop</span>
          <span><i class="dot" style="background:#475569"></i>3rd hop</span>`}
    <span><i class="dot diamond" style="background:#a78bfa"></i>external</span>
    <span><i class="dot" style="background:#ef4444"></i>risky (intel)</span>
    ${host
      ? html`<span><i class="bar" style="background:#475569"></i>its events (width: how many)</span>`
      : html`<span><i class="bar" style="background:#f59e0b"></i>event</span>
          <span><i class="bar dashed"></i>relay</span>`}
  </div>`;
}
