// Status: what the running node knows now, from /api/status (and /api/calls/ice for the relay
// a call would use), refreshed every few seconds and on every event. Nothing here is a
// guess: a figure the node does not measure says so and names the command that does.
import { useEffect, useState } from "preact/hooks";
import { html, api } from "../app.js";

const CARRYING = new Set(["supernode", "draining", "retiring"]);

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

/** The relay a call placed now would use: the TURN server of the node's ICE plan. */
function callRelay(plan) {
  if (!plan) return null; // not known yet
  const turn = plan.ice_servers.find((s) => s.urls.startsWith("turn"));
  if (!turn) return "none: calls use host and server-reflexive candidates only";
  const [, where, transport] = turn.urls.match(/^turns?:([^?]+)(?:\?transport=(\w+))?/) || [];
  return `${where || turn.urls}${transport ? ` over ${transport.toUpperCase()}` : ""}`;
}

export function StatusView({ paths, eventCount }) {
  const [status, setStatus] = useState(null);
  const [plan, setPlan] = useState(null);
  const [error, setError] = useState("");
  const calls = paths.has("/api/calls/ice");
  const refresh = () => {
    api("GET", "/api/status").then((s) => { setStatus(s); setError(""); }, (e) => setError(e.message));
    if (calls) api("GET", "/api/calls/ice").then(setPlan, () => setPlan(false)); // false: no calls here
  };
  useEffect(() => { refresh(); const t = setInterval(refresh, 5000); return () => clearInterval(t); }, [calls]);
  useEffect(() => { refresh(); }, [eventCount]);
  if (error) return html`<h2 tabindex="-1">Status</h2><p class="error" role="alert">${error}</p>`;
  if (!status) return html`<h2 tabindex="-1">Status</h2><p role="status">Loading…</p>`;
  const relay = status.relay;
  const service = (name) => (status.services.find((s) => s.name === name) || {}).statistics;
  const reach = service("signalling");
  const search = service("relay-search");
  const home = reach && reach.home;
  const homes = reach ? (reach.homes > 0 ? `attached to ${plural(reach.homes, "home supernode")}`
    : home ? "this node is a home itself (peers attach here)" : "none: not attached, so peers cannot signal this node")
    : "signalling is off ([presence] enabled = false)";
  const chosen = search ? search.chosen.map(([h, p]) => `${h}:${p}`) : null; // null: no search runs
  return html`<h2 tabindex="-1">Status</h2>
  <section class="card" aria-labelledby="net-h"><h3 id="net-h">Network</h3><dl>
    <dt>Reachability</dt><dd id="reachability">${relay ? relay.reachability : "not measured: the supernode role is off"}</dd>
    <dt>NAT type</dt><dd id="nat-type">not measured by the running node: <code>p2pnode nat</code> tells the mapping and filtering behaviour</dd>
    <dt>Role</dt><dd id="role">${relay ? `${relay.role} — ${relay.reason}` : "peer (supernode role off)"}</dd>
    ${relay && CARRYING.has(relay.role) && html`<dt>Relays carried</dt>
      <dd id="relay-load">${relay.load} of ${relay.capacity} relay allocations${relay.accepting ? "" : " (not accepting new ones)"}</dd>
      <dt>Relay addresses</dt><dd class="mono">${relay.relay_udp.join(", ") || "—"}</dd>`}
    ${home && html`<dt>Attached peers carried</dt><dd id="attached-peers">${home.attached}${home.pending ? ` (+${home.pending} attaching)` : ""}, ${plural(home.watches, "presence watch")}</dd>`}
    <dt>Home supernodes</dt><dd id="homes">${homes}</dd>
    <dt>Relays found</dt><dd id="relays-chosen">${chosen === null ? "not searched (relay_search off)"
      : chosen.length ? html`<span class="mono">${chosen.join(", ")}</span>${search ? ` (of ${search.known} known)` : ""}` : "none yet"}</dd>
    ${calls && plan !== false && html`<dt>Relay for calls</dt><dd id="call-relay" class="mono">${callRelay(plan) || "…"}</dd>`}
    <dt>DHT address</dt><dd class="mono">${status.dht_address}</dd>
    <dt>DHT table</dt><dd id="table">${status.table.contacts} contacts in ${status.table.buckets_used} buckets, ${status.table.records} records${status.table.healthy ? "" : " (not healthy yet)"}</dd>
    <dt>Uptime</dt><dd>${Math.round(status.uptime)} s</dd>
  </dl></section>
  <section class="card" aria-labelledby="svc-h"><h3 id="svc-h">Services</h3>
    <table><thead><tr><th scope="col">Service</th><th scope="col">State</th><th scope="col">Reason</th></tr></thead>
    <tbody>${status.services.map((s) => html`<tr data-service=${s.name}><td>${s.name}</td><td>${s.state}</td><td>${s.reason}</td></tr>`)}</tbody></table>
  </section>`;
}
