// Settings: presence (status and note for those who watch us) and reach: who may see our
// presence, who may call. The node keeps and enforces them (its homes refuse other watchers,
// its call service lets strangers ring, wait as requests, or refuses them) and whether it
// answers calls unattended (off unless chosen here or by [calls] auto_answer).
import { useEffect, useState } from "preact/hooks";
import { html, api } from "../app.js";

const CALLERS = [
  ["ring", "Anyone (strangers ring too)"],
  ["request", "Contacts (strangers wait silently as requests)"],
  ["refuse", "Contacts only (strangers are refused)"],
];

function ReachForm() {
  const [reach, setReach] = useState(null);
  const [message, setMessage] = useState("");
  useEffect(() => { api("GET", "/api/settings").then(setReach, (e) => setMessage(e.message)); }, []);
  const save = async (event) => {
    event.preventDefault();
    try {
      setReach(await api("PUT", "/api/settings", {
        presence_visibility: reach.presence_visibility, who_may_call: reach.who_may_call,
        auto_answer: reach.auto_answer,
      }));
      setMessage("Saved.");
    } catch (error) { setMessage(`Not saved: ${error.message}`); }
  };
  if (!reach) return html`<p role="status">${message || "Loading…"}</p>`;
  return html`<form onSubmit=${save} id="reach-form" data-loaded="yes">
    <label for="presence-visibility">Who may see my presence</label>
    <select id="presence-visibility" value=${reach.presence_visibility}
      onChange=${(e) => setReach({ ...reach, presence_visibility: e.target.value })}>
      <option value="everyone">everyone</option>
      <option value="contacts">my contacts</option>
      <option value="nobody">nobody (I appear offline)</option>
    </select>
    <label for="who-calls">Who may call</label>
    <select id="who-calls" value=${reach.who_may_call}
      onChange=${(e) => setReach({ ...reach, who_may_call: e.target.value })}>
      ${CALLERS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
    </select>
    <label><input type="checkbox" id="auto-answer" checked=${reach.auto_answer}
      onChange=${(e) => setReach({ ...reach, auto_answer: e.target.checked })} />
      Answer calls automatically, without me (the node answers with its own media: for unattended nodes)</label>
    <button type="submit" id="reach-save">Save</button>
    <p role="status" id="reach-message">${message}</p>
  </form>`;
}

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
  <section class="card" aria-labelledby="reach-h"><h3 id="reach-h">Who may reach me</h3>
    ${enabled && paths.has("/api/settings") ? html`<${ReachForm} />` : html`<p class="notice">Needs presence on this node.</p>`}
  </section>`;
}
