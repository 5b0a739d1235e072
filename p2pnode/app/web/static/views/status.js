// Status: NAT reachability, role, supernode load, relays in use, the services (from /api/status).
import { useEffect, useState } from "preact/hooks";
import { html, api } from "../app.js";

export function StatusView({ eventCount }) {
  const [status, setStatus] = useState(null);
  const [error, setError] = useState("");
  const refresh = () => api("GET", "/api/status").then(setStatus, (e) => setError(e.message));
  useEffect(() => { refresh(); const t = setInterval(refresh, 5000); return () => clearInterval(t); }, []);
  useEffect(() => { refresh(); }, [eventCount]);
  if (error) return html`<h2 tabindex="-1">Status</h2><p class="error" role="alert">${error}</p>`;
  if (!status) return html`<h2 tabindex="-1">Status</h2><p role="status">Loading…</p>`;
  const relay = status.relay;
  const signalling = status.services.find((s) => s.name === "signalling");
  const reach = signalling && signalling.statistics;
  return html`<h2 tabindex="-1">Status</h2>
  <section class="card" aria-labelledby="net-h"><h3 id="net-h">Network</h3><dl>
    <dt>Reachability</dt><dd id="reachability">${relay ? relay.reachability : "not measured (supernode role off)"}</dd>
    <dt>Role</dt><dd id="role">${relay ? `${relay.role} — ${relay.reason}` : "peer"}</dd>
    ${relay && html`<dt>Supernode load</dt><dd>${relay.load} of ${relay.capacity} relays${relay.accepting ? "" : " (not accepting)"}</dd>
      <dt>Relays in use</dt><dd>${relay.chosen_relays.length ? relay.chosen_relays.join(", ") : "none"}</dd>
      <dt>Relay addresses</dt><dd>${relay.relay_udp.join(", ") || "—"}</dd>`}
    ${reach && html`<dt>Home supernodes</dt><dd id="homes">${reach.home ? "this node serves as a home" : `attached to ${reach.homes}`}</dd>`}
    <dt>DHT address</dt><dd class="mono">${status.dht_address}</dd>
    <dt>DHT table</dt><dd id="table">${status.table.contacts} contacts in ${status.table.buckets_used} buckets, ${status.table.records} records${status.table.healthy ? "" : " (not healthy yet)"}</dd>
    <dt>Uptime</dt><dd>${Math.round(status.uptime)} s</dd>
  </dl></section>
  <section class="card" aria-labelledby="svc-h"><h3 id="svc-h">Services</h3>
    <table><thead><tr><th scope="col">Service</th><th scope="col">State</th><th scope="col">Reason</th></tr></thead>
    <tbody>${status.services.map((s) => html`<tr><td>${s.name}</td><td>${s.state}</td><td>${s.reason}</td></tr>`)}</tbody></table>
  </section>`;
}
