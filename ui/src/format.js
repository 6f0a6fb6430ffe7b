// How values read on screen: UTC times, byte and count units, risk bands, protocols.
import { useEffect, useState } from "preact/hooks";

const pad = (n) => String(n).padStart(2, "0");

/** "2026-03-03 11:00:26" (UTC) from an ISO string or a Date; "" for none. */
export function time(v, seconds = true) {
  if (!v) return "";
  const d = v instanceof Date ? v : new Date(String(v).replace(" ", "T").replace(/\+00$/, "Z"));
  if (Number.isNaN(d.getTime())) return String(v);
  const hm = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  return (
    `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    (seconds ? `${hm}:${pad(d.getUTCSeconds())}` : hm)
  );
}

export function ms(v) {
  return v ? new Date(String(v).replace(" ", "T").replace(/\+00$/, "Z")).getTime() : NaN;
}

/** An ISO timestamp for API filters (seconds precision, UTC). */
export function iso(msValue) {
  return new Date(msValue).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${i ? v.toFixed(v < 10 ? 1 : 0) : v} ${units[i]}`;
}

export function count(n) {
  if (n === null || n === undefined) return "";
  const v = Number(n);
  if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(1)} M`;
  if (Math.abs(v) >= 1e4) return `${(v / 1e3).toFixed(1)} k`;
  return v.toLocaleString("en-US");
}

export function num(v, digits = 2) {
  if (v === null || v === undefined || v === "") return "";
  const n = Number(v);
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

/** The API's risk bands (GET /events/stats): high >= 80, medium >= 50, low below. */
export function band(risk) {
  if (risk >= 80) return "high";
  if (risk >= 50) return "medium";
  return "low";
}

export const BAND_COLORS = { high: "#ef4444", medium: "#f59e0b", low: "#38bdf8" };

const PROTOS = { 1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 58: "icmp6", 132: "sctp" };

export function proto(p) {
  return p === null || p === undefined ? "" : PROTOS[p] || String(p);
}

/** "203.0.113.66:8443/tcp" (ICMP ports are type*256+code and shown as such). */
export function service(e) {
  if (e.dst_port === null || e.dst_port === undefined) return proto(e.proto);
  if (e.proto === 1 || e.proto === 58) {
    return `icmp ${Math.floor(e.dst_port / 256)}/${e.dst_port % 256}`;
  }
  return `${e.dst_port}/${proto(e.proto)}`;
}

export function label(s) {
  return s ? String(s).replace(/_/g, " ") : "";
}

/** The value, settled: it changes only once `delay` ms passed without a new value. */
export function useDebounced(value, delay = 300) {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setSettled(value), delay);
    return () => clearTimeout(t);
  }, [value, delay]);
  return settled;
}

/** Private, loopback, link-local and unique-local addresses (not looked up in intel). */
export function isPrivate(ip) {
  if (!ip || ip === "*") return true;
  if (ip.includes(":")) return /^(fc|fd|fe80|::1$)/i.test(ip);
  const [a, b] = ip.split(".").map(Number);
  return a === 10 || a === 127 || (a === 172 && b >= 16 && b < 32) ||
    (a === 192 && b === 168) || (a === 169 && b === 254);
}
