// The browser leg: this page's RTCPeerConnection is the call's media endpoint.
// ICE servers come from the node (our supernodes' STUN/TURN with this identity's
// credentials; never a public server). The page gathers every candidate before it hands
// its SDP to the node (no trickle: the call signal carries one SDP), and the node signs
// and seals that SDP, the page's DTLS fingerprint included, as the call's offer or answer.
//
// Relay failover: a new path is a new connection (new ICE, new DTLS), made here, never
// an old SDP reused. When the peer re-offers (it heard silence on its relay) the node
// holds it and this page answers from a fresh connection (/app/calls/ID/reanswer). When
// this page placed the call and hears nothing for SILENCE_MS (or ICE failed), it offers
// from a fresh connection with a fresh ICE plan from the node (/app/calls/ID/reoffer; the
// node's plan skips a relay that no longer answers), applies the peer's re-answer, and
// closes the old connection. The callee never re-offers (no glare of re-offers).
//
// A reload: the node keeps the call, the page lost its connection. reconcile() finds an
// answered call of a page with no leg here and re-attaches (/app/calls/ID/attach): a
// fresh connection's offer goes to the peer as a re-offer (the peer's leg stays; only
// its connection to us is renegotiated: a new page connection has new ICE and DTLS).
// One page leg per call: each attach numbers a leg and replaces the earlier one; a page
// whose leg number is no longer the node's closes its connection and never re-attaches.
import { api } from "./app.js";

const CALLS = "/api/calls";
const GATHER_MS = 10000; // a bound on ICE gathering; what was gathered by then is sent
const POLL_MS = 200;
const WATCH_MS = 500; // how often a live call checks for a held re-offer and for silence
const SILENCE_MS = 1500; // nothing received this long on a live call: move it (caller)
const CONNECT_MS = 8000; // a new connection that never brought a packet: move it (caller)
const REANSWER_MS = 10000; // a re-offer not answered by then is given up (and tried again)
const MAX_REOFFERS = 6;
const LIVE = new Set(["new", "dialling", "ringing-remote", "offered", "ringing-local", "requested", "answered"]);

const MAX_ATTACHES = 3; // per call and page: a peer that never re-answers is not retried forever

const legs = new Map(); // call id -> { pc, stream, muted }
const attaching = new Set(); // call ids whose attach runs now
const attached = new Map(); // call id -> attaches tried by this page
const foreign = new Set(); // call ids that are not this page's: the node's media, or replaced

async function connection(stream) {
  const plan = await api("GET", `${CALLS}/ice`);
  const iceServers = plan.ice_servers.map((s) => (s.username ? { urls: s.urls, username: s.username, credential: s.credential } : { urls: s.urls }));
  const pc = new RTCPeerConnection({ iceServers });
  const source = stream || await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  for (const track of source.getAudioTracks()) pc.addTrack(track, source);
  pc.ontrack = (event) => play(event.streams[0] || new MediaStream([event.track]));
  // generation: the last re-offer this connection answered or made; remote: the SDP applied
  return { pc, stream: source, muted: false, outgoing: false, generation: 0, remote: null, answered: false, reoffers: 0, timer: null, leg: 0 };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function received(pc) {
  const stats = await pc.getStats();
  let packets = 0;
  stats.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "audio") packets += s.packetsReceived || 0; });
  return packets;
}

function swap(callId, old, fresh) {
  fresh.muted = old.muted;
  fresh.leg = old.leg;
  legs.set(callId, fresh);
  clearInterval(old.timer);
  old.pc.close();
  watch(callId, fresh);
}

// The peer re-offered (the node held it for us): answer from a fresh connection.
async function reanswer(callId, old, held) {
  const fresh = await connection(old.stream);
  Object.assign(fresh, { outgoing: old.outgoing, reoffers: old.reoffers });
  await fresh.pc.setRemoteDescription({ type: "offer", sdp: held.sdp });
  await fresh.pc.setLocalDescription(await fresh.pc.createAnswer());
  try {
    await api("POST", `/app/calls/${callId}/reanswer`, { generation: held.generation, sdp: await gathered(fresh.pc), leg: old.leg });
  } catch (error) { // stale: the peer moved on to a newer re-offer, which the watch answers
    fresh.pc.close();
    return;
  }
  Object.assign(fresh, { generation: held.generation, remote: held.sdp, answered: true });
  swap(callId, old, fresh);
}

// Our media failed on a call we placed: offer from a fresh connection, apply the re-answer.
async function reoffer(callId, old) {
  if (old.reoffers >= MAX_REOFFERS) return;
  old.reoffers += 1;
  const fresh = await connection(old.stream);
  Object.assign(fresh, { outgoing: true, reoffers: old.reoffers });
  await fresh.pc.setLocalDescription(await fresh.pc.createOffer());
  let made;
  try {
    made = await api("POST", `/app/calls/${callId}/reoffer`, { sdp: await gathered(fresh.pc), leg: old.leg });
  } catch (error) { fresh.pc.close(); throw error; } // replaced or ended: the watch closes the leg
  fresh.generation = made.generation;
  for (const deadline = Date.now() + REANSWER_MS; Date.now() < deadline; await sleep(POLL_MS)) {
    if (legs.get(callId) !== old) break; // the call ended meanwhile
    const { sdp } = await api("GET", `${CALLS}/${callId}/sdp`);
    if (sdp && sdp !== old.remote) {
      await fresh.pc.setRemoteDescription({ type: "answer", sdp });
      Object.assign(fresh, { remote: sdp, answered: true });
      swap(callId, old, fresh);
      return;
    }
  }
  fresh.pc.close(); // no re-answer: the watch tries again while re-offers are left
}

function watch(callId, leg) {
  let last = -1;
  let since = Date.now();
  let busy = false;
  leg.timer = setInterval(async () => {
    if (busy || legs.get(callId) !== leg) return;
    busy = true;
    try {
      const held = await api("GET", `/app/calls/${callId}/reoffer`);
      if (held.leg !== undefined && held.leg !== leg.leg) { foreign.add(callId); close(callId); return; } // replaced
      if (held.sdp && held.generation > leg.generation) { await reanswer(callId, leg, held); return; }
      if (!leg.outgoing || !leg.answered) return;
      const packets = await received(leg.pc);
      if (packets !== last) { last = packets; since = Date.now(); return; }
      const limit = packets > 0 ? SILENCE_MS : CONNECT_MS;
      if (Date.now() - since >= limit || leg.pc.iceConnectionState === "failed") {
        await reoffer(callId, leg);
        since = Date.now();
      }
    } catch (error) { /* the call may have ended: reconcile() closes the leg */ }
    finally { busy = false; }
  }, WATCH_MS);
}

async function gathered(pc) {
  if (pc.iceGatheringState === "complete") return pc.localDescription.sdp;
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
  return pc.localDescription.sdp;
}

// What we hear plays through an <audio> element, and an analyser reports its loudest
// frequency (the app's level meter; the end-to-end test reads it as window.p2pPeaks).
function play(stream) {
  let audio = document.getElementById("call-audio");
  if (!audio) {
    audio = document.createElement("audio");
    audio.id = "call-audio"; audio.autoplay = true; audio.hidden = true;
    document.body.append(audio);
  }
  audio.srcObject = stream;
  audio.play().catch(() => {});
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 16384;
  context.createMediaStreamSource(stream).connect(analyser);
  const bins = new Float32Array(analyser.frequencyBinCount);
  window.p2pPeaks = [];
  const timer = setInterval(() => {
    analyser.getFloatFrequencyData(bins);
    let best = 1;
    for (let i = 2; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    if (bins[best] > -70) window.p2pPeaks.push(best * context.sampleRate / analyser.fftSize);
    if (window.p2pPeaks.length > 600) window.p2pPeaks.shift();
    if (stream.getAudioTracks().every((t) => t.readyState === "ended")) { clearInterval(timer); context.close(); }
  }, 100);
}

async function remoteSdp(callId) {
  for (;;) {
    const answer = await api("GET", `${CALLS}/${callId}/sdp`);
    if (answer.sdp) return answer.sdp;
    const calls = (await api("GET", CALLS)).calls;
    const call = calls.find((c) => c.call_id === callId);
    if (call && !LIVE.has(call.state)) return null;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Place a call with this page as the endpoint; the node carries our offer. */
export async function dial(to) {
  const leg = await connection();
  await leg.pc.setLocalDescription(await leg.pc.createOffer());
  const call = await api("POST", CALLS, { to, sdp: await gathered(leg.pc) });
  leg.outgoing = true;
  legs.set(call.call_id, leg);
  remoteSdp(call.call_id).then(async (sdp) => {
    if (!sdp || legs.get(call.call_id) !== leg) return;
    await leg.pc.setRemoteDescription({ type: "answer", sdp });
    Object.assign(leg, { remote: sdp, answered: true });
    watch(call.call_id, leg);
  }).catch(() => close(call.call_id));
  return call;
}

/** Answer a ringing call with this page as the endpoint. */
export async function answer(callId) {
  const offer = await remoteSdp(callId);
  if (!offer) throw new Error("the call ended");
  const leg = await connection();
  await leg.pc.setRemoteDescription({ type: "offer", sdp: offer });
  await leg.pc.setLocalDescription(await leg.pc.createAnswer());
  Object.assign(leg, { remote: offer, answered: true });
  legs.set(callId, leg);
  const answered = await api("POST", `${CALLS}/${callId}/answer`, { sdp: await gathered(leg.pc) });
  watch(callId, leg);
  return answered;
}

export function mute(callId, muted) {
  const leg = legs.get(callId);
  if (!leg) return false;
  leg.muted = muted;
  for (const track of leg.stream.getAudioTracks()) track.enabled = !muted;
  return true;
}

export function isMuted(callId) { return Boolean(legs.get(callId)?.muted); }

/** How this page's media flows, from its selected candidate pair: "direct (host->host)",
 * "relay (relay->host)"; null before ICE has chosen. The same words as the node's. */
export async function path(callId) {
  const leg = legs.get(callId);
  if (!leg) return null;
  const stats = await leg.pc.getStats();
  let pair = null;
  stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
  if (!pair) stats.forEach((s) => { if (!pair && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId)?.candidateType;
  const remote = stats.get(pair.remoteCandidateId)?.candidateType;
  if (!local || !remote) return null;
  return `${local === "relay" || remote === "relay" ? "relay" : "direct"} (${local}->${remote}) in this browser`;
}
export function hasLeg(callId) { return legs.has(callId); }

/** Close this page's connection for a call that ended (or that we hang up). */
export function close(callId) {
  const leg = legs.get(callId);
  if (!leg) return;
  legs.delete(callId);
  clearInterval(leg.timer);
  leg.pc.close();
  for (const track of leg.stream.getTracks()) track.stop();
}

// A live call of a page with no connection here (this page reloaded): offer from a fresh
// connection as the call's new page leg, apply the peer's re-answer.
async function attach(call) {
  const callId = call.call_id;
  const info = await api("GET", `/app/calls/${callId}/reoffer`);
  if (!info.page) { foreign.add(callId); return; }
  const fresh = await connection();
  fresh.outgoing = call.direction === "outgoing";
  await fresh.pc.setLocalDescription(await fresh.pc.createOffer());
  const sdp = await gathered(fresh.pc);
  const before = (await api("GET", `${CALLS}/${callId}/sdp`)).sdp;
  try {
    const made = await api("POST", `/app/calls/${callId}/attach`, { sdp });
    Object.assign(fresh, { leg: made.leg, generation: made.generation });
    for (const deadline = Date.now() + REANSWER_MS; Date.now() < deadline; await sleep(POLL_MS)) {
      const remote = (await api("GET", `${CALLS}/${callId}/sdp`)).sdp;
      if (remote && remote !== before) {
        await fresh.pc.setRemoteDescription({ type: "answer", sdp: remote });
        Object.assign(fresh, { remote, answered: true });
        legs.set(callId, fresh);
        watch(callId, fresh);
        return;
      }
    }
  } catch (error) { /* ended or not a page's call: closed below */ }
  fresh.pc.close();
  for (const track of fresh.stream.getTracks()) track.stop();
}

/** Drop connections of calls the node reports ended; re-attach this page to its live
 * calls that have no connection here (after a reload). */
export function reconcile(calls) {
  for (const call of calls) if (!LIVE.has(call.state) && legs.has(call.call_id)) close(call.call_id);
  for (const call of calls) {
    const id = call.call_id;
    if (call.state !== "answered" || legs.has(id) || attaching.has(id) || foreign.has(id)) continue;
    if ((attached.get(id) || 0) >= MAX_ATTACHES) continue;
    attached.set(id, (attached.get(id) || 0) + 1);
    attaching.add(id);
    attach(call).catch(() => {}).finally(() => attaching.delete(id));
  }
}
