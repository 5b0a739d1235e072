// SIP equipment: the login, password and server to type into a desk phone or PBX (the
// gateway's accounts in this node's home), the devices registered on each account (from the
// running gateway's registrar, /api/sip), a password reset, removing an account (confirmed;
// the node drops its registrations at once) and unregistering one device (DELETE
// /api/sip/registrations/LOGIN?contact=URI). A password is shown once, when the account is
// made or its password reset: only digest hashes are kept. An account's limits (calls to
// phone numbers, concurrent calls) are changed in place (PUT /app/sip/accounts/LOGIN/limits);
// the node validates them and its refusal is shown beside the field.
import { useEffect, useState } from "preact/hooks";
import { html, api } from "../app.js";

const DEVICES = "/api/sip";

/** The limits editor of one account: the node checks the values, the page shows its word. */
function LimitsForm({ account, onDone }) {
  const [e164, setE164] = useState(account.e164);
  const [calls, setCalls] = useState(String(account.max_calls));
  const [error, setError] = useState("");
  const id = (name) => `sip-${name}-${account.login}`;
  const save = async (event) => {
    event.preventDefault();
    const number = /^\d+$/.test(calls.trim()) ? Number(calls.trim()) : calls; // the node says why not
    try {
      await api("PUT", `/app/sip/accounts/${encodeURIComponent(account.login)}/limits`, { allow_e164: e164, max_calls: number });
      onDone(`Limits of ${account.login} saved.`);
    } catch (failure) { setError(`Not saved: ${failure.message}`); }
  };
  return html`<form class="limits" data-limits=${account.login} onSubmit=${save} noValidate
      aria-label=${`Limits of ${account.login}`}>
    <label class="check"><input type="checkbox" id=${id("e164")} checked=${e164}
      onChange=${(e) => setE164(e.target.checked)} /> Calls to phone numbers</label>
    <label for=${id("calls")}>Concurrent calls</label>
    <input id=${id("calls")} inputmode="numeric" size="5" value=${calls} aria-invalid=${error ? "true" : undefined}
      aria-describedby=${error ? id("limits-error") : undefined} onInput=${(e) => setCalls(e.target.value)} />
    <button type="submit">Save limits</button>
    <button type="button" class="secondary" onClick=${() => onDone("")}>Cancel</button>
    ${error && html`<p class="error" role="alert" id=${id("limits-error")}>${error}</p>`}
  </form>`;
}

function devicesNote(error) {
  if (error.status === 404) return "This node runs no SIP gateway ([sip] enabled = true in its config): no device can register here.";
  if (error.status === 503) return "The SIP gateway is not running (see Status).";
  return `Devices not known: ${error.message}`;
}

export function SipView({ eventCount }) {
  const [domain, setDomain] = useState(undefined);
  const [accounts, setAccounts] = useState([]);
  const [gateway, setGateway] = useState(null); // /api/sip: address and registrations
  const [devicesError, setDevicesError] = useState("");
  const [login, setLogin] = useState("");
  const [newDomain, setNewDomain] = useState("");
  const [made, setMade] = useState(null);
  const [confirming, setConfirming] = useState(null); // { login, action: "reset" | "remove" | "limits" }
  const [message, setMessage] = useState("");
  const refresh = () => {
    api("GET", "/app/sip").then((a) => { setDomain(a.domain); setAccounts(a.accounts); }, (e) => setMessage(e.message));
    api("GET", DEVICES).then((g) => { setGateway(g); setDevicesError(""); }, (e) => { setGateway(null); setDevicesError(devicesNote(e)); });
  };
  useEffect(() => { refresh(); const t = setInterval(refresh, 5000); return () => clearInterval(t); }, []);
  useEffect(() => { refresh(); }, [eventCount]);
  const add = async (event) => {
    event.preventDefault();
    try {
      const body = domain ? { login } : { login, domain: newDomain };
      setMade({ ...(await api("POST", "/app/sip/accounts", body)), reset: false });
      setLogin(""); setMessage(""); refresh();
    } catch (error) { setMessage(`Not added: ${error.message}`); }
  };
  const reset = async (account) => {
    setConfirming(null);
    try {
      setMade({ ...(await api("POST", `/app/sip/accounts/${encodeURIComponent(account)}/password`)), reset: true });
      setMessage("");
    } catch (error) { setMessage(`Password not reset: ${error.message}`); }
  };
  const remove = async (account) => {
    setConfirming(null);
    try {
      const done = await api("DELETE", `/app/sip/accounts/${encodeURIComponent(account)}`);
      if (made && made.login === account) setMade(null);
      setMessage(`Removed ${account}; ${done.devices_dropped} registered device${done.devices_dropped === 1 ? "" : "s"} dropped.`);
      refresh();
    } catch (error) { setMessage(`Not removed: ${error.message}`); }
  };
  const unregister = async (r) => {
    try {
      const query = `contact=${encodeURIComponent(r.contact)}`;
      await api("DELETE", `/api/sip/registrations/${encodeURIComponent(r.login)}?${query}`);
      setMessage(`Unregistered a device of ${r.login} (it can register again with the password).`);
      refresh();
    } catch (error) { setMessage(`Not unregistered: ${error.message}`); }
  };
  const devices = (account) => (gateway ? gateway.registrations.filter((r) => r.login === account) : []);
  return html`<h2 tabindex="-1">SIP equipment</h2>
  ${made && html`<section class="card" role="alert" aria-labelledby="made-h" id="sip-made">
    <h3 id="made-h">${made.reset ? "New password for the phone" : "Settings for the phone"}</h3>
    <p>Type these into the desk phone or PBX. <strong>The password is shown only now.</strong>
      ${made.reset ? " Devices still using the old password stop registering." : ""}</p>
    <dl><dt>Login</dt><dd class="mono" id="sip-login">${made.login}</dd>
      <dt>Password</dt><dd class="mono" id="sip-password">${made.password}</dd>
      <dt>Server</dt><dd class="mono" id="sip-server">${made.server}</dd>
      ${gateway && gateway.address && html`<dt>Gateway address</dt><dd class="mono">${gateway.address}</dd>`}
      <dt>P2P identity</dt><dd class="mono">${made.peer_id}</dd></dl>
    <button type="button" class="secondary" onClick=${() => setMade(null)}>Done</button>
  </section>`}
  <section class="card" aria-labelledby="acc-h"><h3 id="acc-h">Accounts${domain ? ` on ${domain}` : ""}</h3>
    ${accounts.length === 0 ? html`<p class="muted">No SIP accounts yet.</p>` : html`<table id="sip-accounts"><thead><tr>
      <th scope="col">Login</th><th scope="col">Server</th><th scope="col">Calls to numbers</th><th scope="col">Concurrent calls</th><th scope="col">P2P identity</th>
      <th scope="col">Devices</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody>${accounts.map((a) => html`<tr data-login=${a.login}><td>${a.login}</td><td>${a.server}</td>
        <td class="e164">${a.e164 ? "allowed" : "no"}</td><td class="max-calls">${a.max_calls}</td><td class="mono">${a.peer_id.slice(0, 16)}…</td>
        <td data-devices=${devices(a.login).length}>${gateway ? devices(a.login).length : "—"}</td>
        <td>${confirming && confirming.login === a.login && confirming.action === "reset"
          ? html`<span role="group" aria-label=${`Reset the password of ${a.login}?`}>Phones using the old password stop working.
              <button type="button" onClick=${() => reset(a.login)}>Reset ${a.login}'s password</button>
              <button type="button" class="secondary" onClick=${() => setConfirming(null)}>Cancel</button></span>`
          : confirming && confirming.login === a.login && confirming.action === "remove"
          ? html`<span role="group" aria-label=${`Remove the account ${a.login}?`}>Its phones stop working now and cannot register again.
              <button type="button" onClick=${() => remove(a.login)}>Remove ${a.login}</button>
              <button type="button" class="secondary" onClick=${() => setConfirming(null)}>Cancel</button></span>`
          : confirming && confirming.login === a.login && confirming.action === "limits"
          ? html`<${LimitsForm} account=${a} onDone=${(note) => { setConfirming(null); setMessage(note); refresh(); }} />`
          : html`<button type="button" class="secondary" aria-label=${`Limits of ${a.login}`} onClick=${() => setConfirming({ login: a.login, action: "limits" })}>Limits…</button>
              <button type="button" class="secondary" aria-label=${`New password for ${a.login}`} onClick=${() => setConfirming({ login: a.login, action: "reset" })}>New password…</button>
              <button type="button" class="secondary" aria-label=${`Remove account ${a.login}`} onClick=${() => setConfirming({ login: a.login, action: "remove" })}>Remove…</button>`}</td></tr>`)}</tbody></table>`}
    <form onSubmit=${add}>
      <label for="sip-new-login">New account login</label>
      <input id="sip-new-login" value=${login} onInput=${(e) => setLogin(e.target.value)} required pattern="[a-z][a-z0-9._-]{1,31}" />
      ${domain === null && html`<label for="sip-domain">SIP domain (the server the phones use)</label>
        <input id="sip-domain" value=${newDomain} onInput=${(e) => setNewDomain(e.target.value)} required />`}
      <button type="submit" id="sip-add">Add account</button>
    </form>
    <p role="status" id="sip-message">${message}</p>
  </section>
  <section class="card" aria-labelledby="dev-h"><h3 id="dev-h">Registered devices</h3>
    ${devicesError ? html`<p class="muted" id="sip-devices-note">${devicesError}</p>`
      : !gateway ? html`<p role="status">Loading…</p>`
      : gateway.registrations.length === 0 ? html`<p class="muted" id="sip-devices-note">No device is registered now. A phone registers with the login, password and server above${gateway.address ? html`, sending to <span class="mono">${gateway.address}</span>` : ""}.</p>`
      : html`<table id="sip-devices"><thead><tr><th scope="col">Account</th><th scope="col">Device</th><th scope="col">Contact</th>
        <th scope="col">From address</th><th scope="col">Transport</th><th scope="col">Expires in</th>
        <th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody>${gateway.registrations.map((r) => html`<tr data-device=${r.login}><td>${r.login}</td>
          <td class="user-agent">${r.user_agent || html`<span class="muted">(no User-Agent)</span>`}</td>
          <td class="mono">${r.contact}</td><td class="mono source">${r.source}</td><td>${r.transport}</td>
          <td class="expires">${r.expires_in} s</td>
          <td><button type="button" class="secondary unregister" aria-label=${`Unregister ${r.user_agent || "the device"} at ${r.source} from ${r.login}`}
            onClick=${() => unregister(r)}>Unregister</button></td></tr>`)}</tbody></table>
        ${gateway.truncated ? html`<p class="muted">More devices are registered than listed.</p>` : ""}`}
  </section>`;
}
