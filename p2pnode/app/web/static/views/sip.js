// SIP equipment: the login, password and server to type into a desk phone, and registered devices.
import { html } from "../app.js";

export const SIP_PATH = "/api/sip/accounts";

export function SipView({ paths }) {
  return html`<h2 tabindex="-1">SIP equipment</h2>
  <p class="notice" role="status" id="sip-missing">${paths.has(SIP_PATH)
    ? "Loading accounts…"
    : html`This node's control API does not list SIP gateway accounts yet (no <code>${SIP_PATH}</code>).
      A desk phone registers with the gateway's login, password and server from its <code>[sip]</code> config.`}</p>
  <section class="card" aria-labelledby="dev-h"><h3 id="dev-h">Registered devices</h3>
    <p class="muted">None known.</p></section>`;
}
