// First run: who am I (peer id, fingerprint), claim a login, export/import the identity.
import { useState } from "preact/hooks";
import { html, api } from "../app.js";

export function IdentityView({ me }) {
  const [login, setLogin] = useState("");
  const [claimed, setClaimed] = useState(null);
  const [message, setMessage] = useState("");
  const [passphrase, setPassphrase] = useState("");
  const [importPass, setImportPass] = useState("");
  const [file, setFile] = useState(null);

  const claim = async (event) => {
    event.preventDefault();
    setMessage("Claiming…");
    try {
      const answer = await api("POST", "/app/login", { login });
      setClaimed(answer);
      setMessage(`Claimed “${answer.login}”, stored on ${answer.stored_on} nodes.`);
    } catch (error) { setMessage(`Could not claim: ${error.message}`); }
  };
  const exportBackup = async (event) => {
    event.preventDefault();
    try {
      const answer = await fetch("/app/identity/export", {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ passphrase }),
      });
      if (!answer.ok) throw new Error((await answer.json()).detail || answer.statusText);
      const blob = await answer.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `p2pnode-${me.peer_id.slice(0, 8).toLowerCase()}.backup.json`;
      link.click();
      setMessage("Backup saved. Keep it and its passphrase apart.");
    } catch (error) { setMessage(`Export failed: ${error.message}`); }
  };
  const importBackup = async (event) => {
    event.preventDefault();
    try {
      const backup = await file.text();
      const answer = await api("POST", "/app/identity/import", { passphrase: importPass, backup });
      setMessage(answer.replaced
        ? `Imported ${answer.peer_id}. The previous key is kept as ${answer.kept}. Restart the node to use it.`
        : "That backup is this identity already.");
    } catch (error) { setMessage(`Import failed: ${error.message}`); }
  };

  return html`<h2 tabindex="-1">Identity</h2>
  <section class="card" aria-labelledby="who">
    <h3 id="who">This node</h3>
    <dl>
      <dt>Peer id</dt><dd class="mono" id="peer-id">${me.peer_id}</dd>
      <dt>Fingerprint</dt><dd class="mono" id="fingerprint">${me.fingerprint}</dd>
      ${claimed && html`<dt>Login</dt><dd id="login-claimed">${claimed.login}</dd>`}
    </dl>
    <p class="muted">Read the fingerprint aloud to a contact to check you reached each other.</p>
  </section>
  <section class="card" aria-labelledby="claim-h">
    <h3 id="claim-h">Claim a login</h3>
    <form onSubmit=${claim}>
      <label for="login">Login (a–z, 0–9, . _ -)</label>
      <input id="login" name="login" autocomplete="username" value=${login}
        onInput=${(e) => setLogin(e.target.value)} required />
      <button type="submit" id="claim">Claim</button>
    </form>
  </section>
  <section class="card" aria-labelledby="backup-h">
    <h3 id="backup-h">Backup</h3>
    <form onSubmit=${exportBackup}>
      <label for="export-pass">Passphrase for the backup file (8+ characters)</label>
      <input id="export-pass" type="password" autocomplete="new-password" minlength="8" required
        value=${passphrase} onInput=${(e) => setPassphrase(e.target.value)} />
      <button type="submit" id="export">Export identity</button>
    </form>
    <form onSubmit=${importBackup}>
      <label for="import-file">Backup file</label>
      <input id="import-file" type="file" accept=".json,application/json" required
        onChange=${(e) => setFile(e.target.files[0])} />
      <label for="import-pass">Its passphrase</label>
      <input id="import-pass" type="password" autocomplete="current-password" required
        value=${importPass} onInput=${(e) => setImportPass(e.target.value)} />
      <button type="submit" class="secondary" id="import">Import identity</button>
    </form>
  </section>
  <p role="status" id="identity-message">${message}</p>`;
}
