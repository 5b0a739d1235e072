// Status: what the running node knows now, from /api/status (and /api/calls/ice for the relay
// a call would use), refreshed every few seconds and on every event. Nothing here is a
// guess: a figure the node does not measure says so and names the command that does.
// Mailboxes come from /api/mailboxes: which supernodes hold our offline mail, since when,
// and the node's last check of each (a MailboxesChanged event refreshes the view).
import { useEffect, useState } from "preact/hooks";
import { html, api } from "../app.js";

const CARRYING = new Set(["supernode", "draining", "retiring"]);

function when(unix) { return new Date(unix * 1000).toLocaleString(); }

function reach(m) {
  if (m.reachable === null) return "not checked yet";
  return `${m.reachable ? "reachable" : "unreachable"} (checked ${new Date(m.checked_at * 1000).toLocaleTimeString()})`;
}

function Mailboxes({ boxes }) {
  if (boxes === false) return null; // no chat on this node
  return html`<section class="card" aria-labelledby="mb-h"><h3 id="mb-h">Mailboxes</h3>
    ${boxes === null ? html`<p role="status">Loading…</p>` : !boxes.mailboxes.length
      ? html`<p id="mailboxes-none">none: messages reach this node only while it is online</p>`
      : html`<table id="mailboxes"><thead><tr><th scope="col">Supernode</th><th scope="col">Address</th>
        <th scope="col">Since</th><th scope="col">State</th></tr></thead>
      <tbody>${boxes.mailboxes.map((m) => html`<tr data-peer=${m.peer_id} data-reachable=${String(m.reachable)}>
        <td class="mono" title=${m.peer_id}>${m.peer_id.slice(0, 16)}…</td><td class="mono">${m.address}</td>
        <td>${when(m.since)} (${m.pinned ? "named in the config" : "chosen by the node"})</td>
        <td class=${m.reachable === false ? "error" : ""}>${reach(m)}</td></tr>`)}</tbody></table>`}
    ${boxes && boxes.former.length ? html`<p id="mailboxes-former">Still drained: ${boxes.former.map((f) =>
      `${f.peer_id.slice(0, 16)}… until ${f.drained_until === null ? "no end known" : when(f.drained_until)}`).join("; ")}</p>` : ""}
  </section>`;
}

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
  const [boxes, setBoxes] = useState(null);
  const [error, setError] = useState("");
  const calls = paths.has("/api/calls/ice");
  const chat = paths.has("/api/mailboxes");
  const refresh = () => {
    api("GET", "/api/status").then((s) => { setStatus(s); setError(""); }, (e) => setError(e.message));
    if (calls) api("GET", "/api/calls/ice").then(setPlan, () => setPlan(false)); // false: no calls here
    if (chat) api("GET", "/api/mailboxes").then(setBoxes, (e) => setBoxes(e.status === 404 ? false : null)); // false: no chat
  };
  useEffect(() => { refresh(); const t = setInterval(refresh, 5000); return () => clearInterval(t); }, [calls, chat]);
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
  ${chat && html`<${Mailboxes} boxes=${boxes} />`}
  <section class="card" aria-labelledby="svc-h"><h3 id="svc-h">Services</h3>
    <table><thead><tr><th scope="col">Service</th><th scope="col">State</th><th scope="col">Reason</th></tr></thead>
    <tbody>${status.services.map((s) => html`<tr data-service=${s.name}><td>${s.name}</td><td>${s.state}</td><td>${s.reason}</td></tr>`)}</tbody></table>
  </section>`;
}
