// Settings: presence (status and note for those who watch us); call policy to come.
import { useEffect, useState } from "preact/hooks";
import { html, api } from "../app.js";

export function SettingsView({ paths }) {
  const enabled = paths.has("/api/presence");
  const [status, setStatus] = useState("online");
  const [note, setNote] = useState("");
  const [message, setMessage] = useState("");
  const [loaded, setLoaded] = useState(false);
  useEffect(() => {
    if (enabled) {
      api("GET", "/api/presence").then((p) => { setStatus(p.status); setNote(p.note); setLoaded(true); }, () => {});
    }
  }, [enabled]);
  const save = async (event) => {
    event.preventDefault();
    try { await api("PUT", "/api/presence", { status, note }); setMessage("Saved."); }
    catch (error) { setMessage(`Not saved: ${error.message}`); }
  };
  return html`<h2 tabindex="-1">Settings</h2>
  <section class="card" aria-labelledby="pres-h"><h3 id="pres-h">Presence</h3>
    ${enabled ? html`<form onSubmit=${save} id="presence-form" data-loaded=${loaded ? "yes" : "no"}>
      <label for="presence-status">Status</label>
      <select id="presence-status" value=${status} onChange=${(e) => setStatus(e.target.value)}>
        <option value="online">online</option><option value="away">away</option><option value="busy">busy</option>
      </select>
      <label for="presence-note">Note</label>
      <input id="presence-note" maxlength="140" value=${note} onInput=${(e) => setNote(e.target.value)} />
      <button type="submit" id="presence-save" disabled=${!loaded}>Save</button>
    </form><p role="status">${message}</p>` : html`<p class="notice">Presence is off on this node.</p>`}
  </section>
  <section class="card" aria-labelledby="calls-h"><h3 id="calls-h">Calls</h3>
    <label><input type="checkbox" disabled /> Answer calls automatically (off)</label>
    <label for="who-calls">Who may call</label>
    <select id="who-calls" disabled><option>contacts</option></select>
  </section>`;
}
