// Chat: conversations (one per contact) with history, receipts, unread counts, the offline
// queue ("queued for offline delivery (N copies held)"), gaps; live over the event stream.
// Unread counts are the node's (they survive a reload); an open conversation on a visible
// page marks its messages read, which sends the read receipts (once each, the node decides).
import { useEffect, useState } from "preact/hooks";
import { html, api } from "../app.js";

export const CHAT_PATH = "/api/messages";
const TRACKED = 20; // outgoing messages whose receipts we follow per conversation
const MAX_READ = 256; // message ids one POST /api/read names (the API's bound)
const marked = new Set(); // incoming ids this page already reported read (the node dedupes too)

async function markRead(peer, messages) {
  if (document.visibilityState !== "visible") return false;
  const ids = messages.filter((m) => m.incoming && !marked.has(m.message_id)).map((m) => m.message_id);
  for (let start = 0; start < ids.length; start += MAX_READ) {
    const chunk = ids.slice(start, start + MAX_READ);
    await api("POST", "/api/read", { peer, message_ids: chunk });
    chunk.forEach((id) => marked.add(id));
  }
  return ids.length > 0;
}

function describe(status) {
  if (!status) return "sending…";
  if (status.read) return "read";
  if (status.delivered) return "delivered";
  if (status.state === "held" || (status.queued && status.copies > 0)) {
    return `queued for offline delivery (${status.copies} ${status.copies === 1 ? "copy" : "copies"} held)`;
  }
  if (status.state === "sent_online") return "sent";
  return status.state;
}

export function ChatView({ paths, events, eventCount }) {
  const ready = paths.has(CHAT_PATH);
  const [contacts, setContacts] = useState([]);
  const [unreadBy, setUnreadBy] = useState({});
  const [peer, setPeer] = useState(null);
  const [history, setHistory] = useState([]);
  const [statuses, setStatuses] = useState({});
  const [text, setText] = useState("");
  const [message, setMessage] = useState("");

  const refresh = async () => {
    const c = await api("GET", "/api/contacts");
    setContacts(c.contacts);
    let h = null;
    if (peer) {
      h = await api("GET", `/api/history/${peer}?limit=200`);
      setHistory(h.messages);
      await markRead(peer, h.messages).catch(() => {});
    }
    const u = await api("GET", "/api/unread");
    setUnreadBy(Object.fromEntries(u.conversations.map((x) => [x.peer_id, x.unread])));
    if (!h) return;
    const mine = h.messages.filter((m) => !m.incoming).slice(-TRACKED);
    const found = await Promise.all(mine.map((m) => api("GET", `/api/messages/${m.message_id}`).catch(() => null)));
    setStatuses(Object.fromEntries(mine.map((m, n) => [m.message_id, found[n]])));
  };
  useEffect(() => {
    if (!ready) return undefined;
    refresh().catch((e) => setMessage(e.message));
    const t = setInterval(() => refresh().catch(() => {}), 3000);
    return () => clearInterval(t);
  }, [ready, peer]);
  useEffect(() => { if (ready) refresh().catch(() => {}); }, [eventCount]);
  useEffect(() => { // a page shown again marks what arrived while it was hidden
    const shown = () => { if (ready && document.visibilityState === "visible") refresh().catch(() => {}); };
    document.addEventListener("visibilitychange", shown);
    return () => document.removeEventListener("visibilitychange", shown);
  }, [ready, peer]);

  const send = async (event) => {
    event.preventDefault();
    try {
      await api("POST", CHAT_PATH, { to: peer, text });
      setText(""); setMessage("");
      await refresh();
    } catch (error) { setMessage(`Not sent: ${error.message}`); }
  };
  const unread = (c) => unreadBy[c.peer_id] || 0;
  const gaps = events.filter((e) => e.type === "ConversationGap" && e.peer_id === peer);
  if (!ready) {
    return html`<h2 tabindex="-1">Chat</h2><p class="notice" role="status" id="chat-missing">
      This node's control API does not offer messaging (no <code>${CHAT_PATH}</code>): set <code>[chat] enabled = true</code>.</p>`;
  }
  const current = contacts.find((c) => c.peer_id === peer);
  return html`<h2 tabindex="-1">Chat</h2>
  <div class="chat">
  <section class="card" aria-labelledby="conv-h"><h3 id="conv-h">Conversations</h3>
    ${contacts.length === 0 ? html`<p class="muted">Add a contact first.</p>` : html`<ul class="conversations">
      ${contacts.map((c) => { const n = unread(c); return html`<li>
        <button type="button" class=${peer === c.peer_id ? "" : "secondary"} data-conversation=${c.name}
          aria-pressed=${peer === c.peer_id} onClick=${() => setPeer(c.peer_id)}>
          ${c.name}${n ? html` <span class="badge" data-unread=${n} aria-label=${`${n} unread`}>${n}</span>` : ""}
        </button></li>`; })}</ul>`}
  </section>
  ${current && html`<section class="card" aria-labelledby="hist-h"><h3 id="hist-h">${current.name}</h3>
    ${gaps.length ? html`<p class="notice" role="status" id="chat-gap">Some messages are missing (gap in the history: waiting for ${gaps[gaps.length - 1].held_seq - gaps[gaps.length - 1].expected_seq} earlier messages).</p>` : ""}
    <ol class="messages" aria-live="polite" id="history">
      ${history.map((m) => html`<li class=${m.incoming ? "theirs" : "mine"} data-text=${m.text}>
        <span>${m.text}</span>${m.chain_ok ? "" : html` <em class="error">(out of order)</em>`}
        <div class="status-line">${new Date(m.sent_at_ms).toLocaleTimeString()}${m.incoming ? "" : html` · <span class="receipt" data-receipt=${describe(statuses[m.message_id])}>${describe(statuses[m.message_id])}</span>`}</div>
      </li>`)}
    </ol>
    <form onSubmit=${send}>
      <label for="chat-text">Message to ${current.name}</label>
      <textarea id="chat-text" rows="2" required value=${text} onInput=${(e) => setText(e.target.value)}
        onKeyDown=${(e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); e.target.form.requestSubmit(); } }}></textarea>
      <button type="submit" id="chat-send">Send</button>
    </form>
  </section>`}
  </div>
  <p role="status" id="chat-message">${message}</p>`;
}
