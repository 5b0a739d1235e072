// SIP equipment: the login, password and server to type into a desk phone or PBX (the
// gateway's accounts in this node's home). A password is shown once, when the account is made.
import { useEffect, useState } from "preact/hooks";
import { html, api } from "../app.js";

export function SipView() {
  const [domain, setDomain] = useState(undefined);
  const [accounts, setAccounts] = useState([]);
  const [login, setLogin] = useState("");
  const [newDomain, setNewDomain] = useState("");
  const [made, setMade] = useState(null);
  const [message, setMessage] = useState("");
  const refresh = () => api("GET", "/app/sip").then((a) => { setDomain(a.domain); setAccounts(a.accounts); }, (e) => setMessage(e.message));
  useEffect(() => { refresh(); }, []);
  const add = async (event) => {
    event.preventDefault();
    try {
      const body = domain ? { login } : { login, domain: newDomain };
      setMade(await api("POST", "/app/sip/accounts", body));
      setLogin(""); setMessage(""); refresh();
    } catch (error) { setMessage(`Not added: ${error.message}`); }
  };
  return html`<h2 tabindex="-1">SIP equipment</h2>
  ${made && html`<section class="card" role="alert" aria-labelledby="made-h" id="sip-made">
    <h3 id="made-h">Settings for the phone</h3>
    <p>Type these into the desk phone or PBX. <strong>The password is shown only now.</strong></p>
    <dl><dt>Login</dt><dd class="mono" id="sip-login">${made.login}</dd>
      <dt>Password</dt><dd class="mono" id="sip-password">${made.password}</dd>
      <dt>Server</dt><dd class="mono" id="sip-server">${made.server}</dd>
      <dt>P2P identity</dt><dd class="mono">${made.peer_id}</dd></dl>
    <button type="button" class="secondary" onClick=${() => setMade(null)}>Done</button>
  </section>`}
  <section class="card" aria-labelledby="acc-h"><h3 id="acc-h">Accounts${domain ? ` on ${domain}` : ""}</h3>
    ${accounts.length === 0 ? html`<p class="muted">No SIP accounts yet.</p>` : html`<table id="sip-accounts"><thead><tr>
      <th scope="col">Login</th><th scope="col">Server</th><th scope="col">Calls to numbers</th><th scope="col">P2P identity</th></tr></thead>
      <tbody>${accounts.map((a) => html`<tr data-login=${a.login}><td>${a.login}</td><td>${a.server}</td>
        <td>${a.e164 ? "allowed" : "no"}</td><td class="mono">${a.peer_id.slice(0, 16)}…</td></tr>`)}</tbody></table>`}
    <form onSubmit=${add}>
      <label for="sip-new-login">New account login</label>
      <input id="sip-new-login" value=${login} onInput=${(e) => setLogin(e.target.value)} required pattern="[a-z][a-z0-9._-]{1,31}" />
      ${domain === null && html`<label for="sip-domain">SIP domain (the server the phones use)</label>
        <input id="sip-domain" value=${newDomain} onInput=${(e) => setNewDomain(e.target.value)} required />`}
      <button type="submit" id="sip-add">Add account</button>
    </form>
    <p role="status">${message}</p>
  </section>
  <section class="card" aria-labelledby="dev-h"><h3 id="dev-h">Registered devices</h3>
    <p class="muted" id="sip-devices">Not shown yet: the running gateway's registrar has no API for its bindings.</p></section>`;
}
