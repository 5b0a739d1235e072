// Calls: place, answer, decline, hang up, mute; state, path (direct or relayed), codec,
// timer, and an incoming-call ring. This page is the media endpoint (phone.js: its own
// RTCPeerConnection, the node carries its SDP as sealed signalling); with no page open the
// node answers by its config or from the CLI, with its own media.
import { useEffect, useRef, useState } from "preact/hooks";
import { html, api } from "../app.js";
import * as phone from "../phone.js";

export const CALL_PATH = "/api/calls";
const LIVE = new Set(["new", "dialling", "ringing-remote", "offered", "ringing-local", "answered"]);

function clock(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

function ring() {
  // two short beeps of WebAudio: no sound file to ship; browsers may need a prior click
  try {
    const audio = new AudioContext();
    [0, 0.4].forEach((at) => {
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      tone.frequency.value = 480; gain.gain.value = 0.1;
      tone.connect(gain).connect(audio.destination);
      tone.start(audio.currentTime + at); tone.stop(audio.currentTime + at + 0.25);
    });
  } catch (error) { /* no audio device */ }
}

export function CallsView({ paths, eventCount }) {
  const ready = paths.has(CALL_PATH);
  const [calls, setCalls] = useState([]);
  const [contacts, setContacts] = useState([]);
  const [to, setTo] = useState("");
  const [message, setMessage] = useState("");
  const [now, setNow] = useState(Date.now());
  const answeredAt = useRef({});
  const [pagePaths, setPagePaths] = useState({}); // call id -> the page's own media path
  const rung = useRef(new Set());
  const refresh = async () => {
    const answer = await api("GET", CALL_PATH);
    setCalls(answer.calls);
    phone.reconcile(answer.calls);
    const found = {};
    for (const call of answer.calls) {
      if (call.state === "answered" && phone.hasLeg(call.call_id)) found[call.call_id] = await phone.path(call.call_id).catch(() => null);
    }
    setPagePaths(found);
    for (const call of answer.calls) {
      if (call.state === "answered" && !answeredAt.current[call.call_id]) answeredAt.current[call.call_id] = Date.now();
      if (call.state === "ringing-local" && !rung.current.has(call.call_id)) { rung.current.add(call.call_id); ring(); }
    }
  };
  useEffect(() => {
    if (!ready) return undefined;
    refresh().catch((e) => setMessage(e.message));
    api("GET", "/api/contacts").then((a) => setContacts(a.contacts), () => {});
    const t = setInterval(() => { setNow(Date.now()); }, 1000);
    const p = setInterval(() => refresh().catch(() => {}), 1000);
    return () => { clearInterval(t); clearInterval(p); };
  }, [ready]);
  useEffect(() => { if (ready) refresh().catch(() => {}); }, [eventCount]);

  const act = async (what, call) => {
    try {
      if (what === "answer") await phone.answer(call.call_id);
      else { await api("POST", `${CALL_PATH}/${call.call_id}/${what}`); phone.close(call.call_id); }
      await refresh();
    } catch (error) { setMessage(`${what} failed: ${error.message}`); }
  };
  const toggleMute = (call) => { phone.mute(call.call_id, !phone.isMuted(call.call_id)); setNow(Date.now()); };
  const place = async (event) => {
    event.preventDefault();
    setMessage("Calling…");
    try { await phone.dial(to); setMessage(""); await refresh(); }
    catch (error) { setMessage(`Call failed: ${error.message}`); }
  };
  if (!ready) {
    return html`<h2 tabindex="-1">Calls</h2><p class="notice" role="status" id="calls-missing">
      This node's control API does not offer calls (no <code>${CALL_PATH}</code>): set <code>[calls] enabled = true</code>.</p>`;
  }
  const incoming = calls.filter((c) => c.state === "ringing-local");
  const name = (peer) => (contacts.find((c) => c.peer_id === peer) || {}).name || `${peer.slice(0, 12)}…`;
  return html`<h2 tabindex="-1">Calls</h2>
  ${incoming.map((c) => html`<div class="card incoming" role="alert" data-incoming=${c.call_id}>
    <strong>${name(c.peer_id)} is calling</strong>
    <button type="button" onClick=${() => act("answer", c)}>Answer</button>
    <button type="button" class="secondary" onClick=${() => act("hangup", c)}>Decline</button></div>`)}
  <section class="card" aria-labelledby="place-h"><h3 id="place-h">Place a call</h3>
    <form onSubmit=${place}>
      <label for="call-to">Contact, login or peer id</label>
      <input id="call-to" list="call-contacts" value=${to} onInput=${(e) => setTo(e.target.value)} required />
      <datalist id="call-contacts">${contacts.map((c) => html`<option value=${c.name} />`)}</datalist>
      <button type="submit" id="call-place">Call</button>
    </form>
    <p class="muted">This browser sends your microphone and plays the call; allow the microphone when asked.</p>
    <p role="status" id="calls-message">${message}</p>
  </section>
  <section class="card" aria-labelledby="recent-h"><h3 id="recent-h">Calls</h3>
    ${calls.length === 0 ? html`<p class="muted">No calls yet.</p>` : html`<table><thead><tr>
      <th scope="col">With</th><th scope="col">State</th><th scope="col">Path</th><th scope="col">Time</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody>${[...calls].reverse().map((c) => html`<tr data-call=${c.call_id} data-state=${c.state}>
        <td>${c.direction === "incoming" ? "← " : "→ "}${name(c.peer_id)}</td>
        <td>${c.state}${c.detail ? html` <span class="muted">(${c.detail})</span>` : ""}</td>
        <td>${pagePaths[c.call_id] || c.path || "—"}${c.codec ? html` <span class="muted">${c.codec}</span>` : ""}</td>
        <td role="timer">${c.state === "answered" && answeredAt.current[c.call_id] ? clock(now - answeredAt.current[c.call_id]) : ""}</td>
        <td>${c.state === "answered" && phone.hasLeg(c.call_id) ? html`<button type="button" class="secondary" aria-pressed=${phone.isMuted(c.call_id) ? "true" : "false"} onClick=${() => toggleMute(c)}>${phone.isMuted(c.call_id) ? "Unmute" : "Mute"}</button> ` : ""}${LIVE.has(c.state) ? html`<button type="button" class="secondary" aria-label=${`Hang up ${name(c.peer_id)}`} onClick=${() => act("hangup", c)}>Hang up</button>` : ""}</td>
      </tr>`)}</tbody></table>`}
  </section>`;
}
