// Calls: the browser is the media endpoint. This view holds the controls (call, answer,
// decline, hang up, mute, timer, ring); the node still has to carry the page's offer/answer.
import { useEffect, useState } from "preact/hooks";
import { html } from "../app.js";

export const CALL_PATH = "/api/calls";

export function CallsView({ paths }) {
  const ready = paths.has(CALL_PATH);
  const [muted, setMuted] = useState(false);
  const [started, setStarted] = useState(null);
  const [now, setNow] = useState(Date.now());
  useEffect(() => { const t = setInterval(() => setNow(Date.now()), 1000); return () => clearInterval(t); }, []);
  const seconds = started ? Math.floor((now - started) / 1000) : 0;
  const timer = `${String(Math.floor(seconds / 60)).padStart(2, "0")}:${String(seconds % 60).padStart(2, "0")}`;
  return html`<h2 tabindex="-1">Calls</h2>
  ${ready ? "" : html`<p class="notice" role="status" id="calls-missing">
    Calls from the app need the node to carry this page's WebRTC offer and answer as sealed
    signalling (no <code>${CALL_PATH}</code> in this node's control API yet).</p>`}
  <section class="card" aria-labelledby="call-h"><h3 id="call-h">Place a call</h3>
    <label for="call-to">Contact, login or number</label>
    <input id="call-to" disabled=${!ready} />
    <div>
      <button type="button" disabled=${!ready} onClick=${() => setStarted(Date.now())}>Call</button>
      <button type="button" class="secondary" disabled=${!started} aria-pressed=${muted}
        onClick=${() => setMuted(!muted)}>${muted ? "Unmute" : "Mute"}</button>
      <button type="button" class="secondary" disabled=${!started} onClick=${() => setStarted(null)}>Hang up</button>
    </div>
    <p role="timer" aria-label="Call duration">${started ? timer : "No call"}</p>
    <p class="muted">Path: shown here once connected (direct or relayed via a supernode).</p>
  </section>`;
}
