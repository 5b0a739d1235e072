// The browser leg: this page's RTCPeerConnection is the call's media endpoint.
// ICE servers come from the node (our supernodes' STUN/TURN with this identity's
// credentials; never a public server). The page gathers every candidate before it hands
// its SDP to the node (no trickle: the call signal carries one SDP), and the node signs
// and seals that SDP, the page's DTLS fingerprint included, as the call's offer or answer.
import { api } from "./app.js";

const CALLS = "/api/calls";
const GATHER_MS = 10000; // a bound on ICE gathering; what was gathered by then is sent
const POLL_MS = 200;
const LIVE = new Set(["new", "dialling", "ringing-remote", "offered", "ringing-local", "requested", "answered"]);

const legs = new Map(); // call id -> { pc, stream, muted }

async function connection() {
  const plan = await api("GET", `${CALLS}/ice`);
  const iceServers = plan.ice_servers.map((s) => (s.username ? { urls: s.urls, username: s.username, credential: s.credential } : { urls: s.urls }));
  const pc = new RTCPeerConnection({ iceServers });
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
  pc.ontrack = (event) => play(event.streams[0] || new MediaStream([event.track]));
  return { pc, stream, muted: false };
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
  legs.set(call.call_id, leg);
  remoteSdp(call.call_id).then(async (sdp) => {
    if (sdp && legs.get(call.call_id) === leg) await leg.pc.setRemoteDescription({ type: "answer", sdp });
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
  legs.set(callId, leg);
  return api("POST", `${CALLS}/${callId}/answer`, { sdp: await gathered(leg.pc) });
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
  leg.pc.close();
  for (const track of leg.stream.getTracks()) track.stop();
}

/** Drop connections of calls the node reports ended. */
export function reconcile(calls) {
  for (const call of calls) if (!LIVE.has(call.state) && legs.has(call.call_id)) close(call.call_id);
}
