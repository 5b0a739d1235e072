// Calls: place, answer, decline, hang up, mute; state, path (direct or relayed), codec,
// timer, digits keyed, a gateway's relayed caller; and the incoming-call alert with its
// ring, which the shell shows over every view. This page is the media endpoint (phone.js: its own
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

// The ring tone: 440 + 480 Hz, 2 s on and 4 s off (the North American ring), made with
// WebAudio (no sound file to ship) while any call rings here. An analyser on its output
// reports what it plays (window.p2pRingPeaks: the end-to-end test reads it).
let ringer = null;

function startRing() {
  if (ringer) return;
  try {
    const audio = new AudioContext();
    const gain = audio.createGain();
    const analyser = audio.createAnalyser();
    analyser.fftSize = 8192;
    gain.gain.value = 0;
    gain.connect(analyser).connect(audio.destination);
    const tones = [440, 480].map((hz) => {
      const tone = audio.createOscillator();
      tone.frequency.value = hz; tone.connect(gain); tone.start();
      return tone;
    });
    const cadence = () => { // 2 s on, 4 s off, scheduled a cycle ahead
      const at = audio.currentTime;
      gain.gain.setValueAtTime(0.1, at); gain.gain.setValueAtTime(0, at + 2);
    };
    cadence();
    const bins = new Float32Array(analyser.frequencyBinCount);
    window.p2pRingPeaks = [];
    const meter = setInterval(() => {
      analyser.getFloatFrequencyData(bins);
      let best = 1;
      for (let i = 2; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
      if (bins[best] > -70) window.p2pRingPeaks.push(best * audio.sampleRate / analyser.fftSize);
      if (window.p2pRingPeaks.length > 100) window.p2pRingPeaks.shift();
    }, 100);
    ringer = { audio, tones, timers: [meter, setInterval(cadence, 6000)] };
    window.p2pRinging = true;
  } catch (error) { /* no audio device: the alert still shows */ }
}

function stopRing() {
  window.p2pRinging = false;
  if (!ringer) return;
  for (const timer of ringer.timers) clearInterval(timer);
  for (const tone of ringer.tones) tone.stop();
  ringer.audio.close();
  ringer = null;
}

// Only calls that ring here: a stranger's call "requested" waits silently in Contacts' requests.
const RINGING = new Set(["ringing-local"]);

/** Who a call is with, in words: a contact's name, else the peer id's start; a caller
 * relayed by a SIP gateway is named with the gateway's verdict. */
export function caller(call, contacts) {
  const contact = contacts.find((c) => c.peer_id === call.peer_id);
  const peer = contact ? contact.name : `${call.peer_id.slice(0, 12)}…`;
  if (!call.relayed_caller) return peer;
  return `${call.relayed_caller} via SIP gateway ${peer}, caller ${call.caller_verified ? "verified by the gateway" : "unverified"}`;
}

/** The incoming-call alert, shown over every view: who calls, Answer and Decline, a ring
 * tone while it rings. It takes the focus (Answer) when a call starts ringing; Escape
 * declines. Answering here makes this page the call's media endpoint and opens Calls. */
export function IncomingCallAlert({ paths, eventCount }) {
  const ready = paths.has(CALL_PATH);
  const [ringing, setRinging] = useState([]);
  const [contacts, setContacts] = useState([]);
  const [message, setMessage] = useState("");
  const shown = useRef("");
  const refresh = async () => {
    const calls = (await api("GET", CALL_PATH)).calls;
    phone.reconcile(calls);
    setRinging(calls.filter((c) => c.direction === "incoming" && RINGING.has(c.state)));
  };
  useEffect(() => {
    if (!ready) return undefined;
    refresh().catch(() => {});
    api("GET", "/api/contacts").then((a) => setContacts(a.contacts), () => {});
    const poll = setInterval(() => refresh().catch(() => {}), 3000); // the stream may be reconnecting
    return () => { clearInterval(poll); stopRing(); };
  }, [ready]);
  useEffect(() => { if (ready) refresh().catch(() => {}); }, [eventCount]);
  useEffect(() => {
    const ids = ringing.map((c) => c.call_id).join(",");
    if (ringing.length) startRing(); else stopRing();
    if (ids && ids !== shown.current) {
      api("GET", "/api/contacts").then((a) => setContacts(a.contacts), () => {});
      setTimeout(() => document.querySelector("#incoming-alert button")?.focus(), 0);
    }
    shown.current = ids;
  }, [ringing]);
  if (!ready) return null;
  const act = async (what, call) => {
    stopRing();
    try {
      if (what === "answer") {
        await phone.answer(call.call_id);
        if (location.hash !== "#/calls") location.hash = "#/calls";
      } else {
        await api("POST", `${CALL_PATH}/${call.call_id}/hangup`);
        phone.close(call.call_id);
      }
      setMessage("");
      await refresh();
    } catch (error) { setMessage(`${what} failed: ${error.message}`); }
  };
  const keys = (event, call) => { if (event.key === "Escape") { event.preventDefault(); act("hangup", call); } };
  return html`<div id="incoming-alert" class="incoming-alert" aria-live="assertive">
    ${ringing.map((c) => html`<section class="card incoming" role="alertdialog" aria-labelledby=${`in-${c.call_id}`}
      data-incoming=${c.call_id} onKeyDown=${(e) => keys(e, c)}>
      <strong id=${`in-${c.call_id}`}>${caller(c, contacts)} is calling</strong>
      <button type="button" onClick=${() => act("answer", c)}>Answer</button>
      <button type="button" class="secondary" onClick=${() => act("hangup", c)}>Decline</button>
      <span class="muted">Esc declines</span></section>`)}
    ${message && html`<p class="error" role="alert">${message}</p>`}
  </div>`;
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
  const name = (peer) => (contacts.find((c) => c.peer_id === peer) || {}).name || `${peer.slice(0, 12)}…`;
  return html`<h2 tabindex="-1">Calls</h2>
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
        <td class="with">${c.direction === "incoming" ? "← " : "→ "}${caller(c, contacts)}</td>
        <td>${c.state}${c.detail && !c.detail.startsWith("duration_ms=") ? html` <span class="muted">(${c.detail})</span>` : ""}${c.dtmf ? html` <span class="muted dtmf">keyed ${c.dtmf}</span>` : ""}</td>
        <td>${pagePaths[c.call_id] || c.path || "—"}${c.codec ? html` <span class="muted">${c.codec}</span>` : ""}</td>
        <td role="timer">${c.state === "answered" && answeredAt.current[c.call_id] ? clock(now - answeredAt.current[c.call_id]) : ""}</td>
        <td>${c.state === "answered" && phone.hasLeg(c.call_id) ? html`<button type="button" class="secondary" aria-pressed=${phone.isMuted(c.call_id) ? "true" : "false"} onClick=${() => toggleMute(c)}>${phone.isMuted(c.call_id) ? "Unmute" : "Mute"}</button> ` : ""}${LIVE.has(c.state) ? html`<button type="button" class="secondary" aria-label=${`Hang up ${name(c.peer_id)}`} onClick=${() => act("hangup", c)}>Hang up</button>` : ""}</td>
      </tr>`)}</tbody></table>`}
  </section>`;
}
