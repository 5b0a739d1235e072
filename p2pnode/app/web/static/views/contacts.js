// Contacts with presence dots: the list from /api/contacts, refreshed on every presence event;
// contact requests from strangers (kept by the node) with accept / decline, live as they come.
import { useEffect, useState } from "preact/hooks";
import { html, api } from "../app.js";

/** Pending requests and unread messages for the navigation's badges: the node's counts,
 * fetched on every event and every 5 s (marking read emits no event). */
export function useNavCounts(paths, eventCount, enabled) {
  const [counts, setCounts] = useState({});
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!enabled) return undefined;
    const t = setInterval(() => setTick((n) => n + 1), 5000);
    return () => clearInterval(t);
  }, [enabled]);
  useEffect(() => {
    if (!enabled) return;
    const get = (path, pick) => (paths.has(path) ? api("GET", path).then(pick, () => 0) : Promise.resolve(0));
    Promise.all([
      get("/api/contacts/requests", (a) => a.requests.length),
      get("/api/unread", (a) => a.conversations.reduce((n, c) => n + c.unread, 0)),
    ]).then(([contacts, chat]) => setCounts({ contacts, chat }));
  }, [paths, eventCount, enabled, tick]);
  return counts;
}

export function presenceLabel(contact) {
  if (contact.online === null) return "unknown";
  return contact.online ? (contact.status || "online") : "offline";
}

export function ContactsView({ paths, eventCount }) {
  const [contacts, setContacts] = useState([]);
  const [name, setName] = useState("");
  const [peer, setPeer] = useState("");
  const [message, setMessage] = useState("");
  const enabled = paths.has("/api/contacts");
  const [fingerprints, setFingerprints] = useState({});
  const [requests, setRequests] = useState([]);
  const [blocked, setBlocked] = useState([]);
  const [requestNames, setRequestNames] = useState({});
  const refreshRequests = () => api("GET", "/api/contacts/requests").then((a) => {
    setRequests(a.requests);
    setBlocked(a.blocked);
    a.requests.filter((r) => !(r.peer_id in fingerprints)).forEach((r) => {
      api("GET", `/app/fingerprint/${r.peer_id}`).then((f) => setFingerprints((old) => ({ ...old, [r.peer_id]: f.fingerprint })), () => {});
    });
  }, () => {});
  const refresh = () => api("GET", "/api/contacts").then((a) => {
    refreshRequests();
    setContacts(a.contacts);
    a.contacts.filter((c) => !(c.peer_id in fingerprints)).forEach((c) => {
      api("GET", `/app/fingerprint/${c.peer_id}`).then((f) => setFingerprints((old) => ({ ...old, [c.peer_id]: f.fingerprint })), () => {});
    });
  }, (e) => setMessage(e.message));
  useEffect(() => { if (enabled) { refresh(); const t = setInterval(refresh, 5000); return () => clearInterval(t); } return undefined; }, [enabled]);
  useEffect(() => { if (enabled) refresh(); }, [eventCount]);

  const add = async (event) => {
    event.preventDefault();
    setMessage("Looking up…");
    try {
      let target = peer.trim();
      if (target.startsWith("+")) { // a phone number: only through trusted ENUM (verified)
        const found = await api("GET", `/api/enum/${encodeURIComponent(target)}`);
        if (found.outcome !== "verified" || found.candidates.length !== 1) {
          setMessage(`${target}: ${found.outcome} — no trusted registrar vouches for one owner.`);
          return;
        }
        target = found.candidates[0].peer_id;
      }
      await api("POST", "/api/contacts", { name, peer: target });
      setMessage(`Added ${name}.`); setName(""); setPeer(""); refresh();
    } catch (error) { setMessage(`Could not add: ${error.message}`); }
  };
  const accept = async (request) => {
    const chosen = (requestNames[request.peer_id] || "").trim();
    try {
      await api("POST", `/api/contacts/requests/${request.peer_id}/accept`, { name: chosen });
      setMessage(`Accepted ${chosen}.`); refresh();
    } catch (error) { setMessage(`Could not accept: ${error.message}`); }
  };
  const decline = async (request) => {
    try {
      await api("POST", `/api/contacts/requests/${request.peer_id}/decline`);
      setMessage("Declined: their messages and calls are blocked."); refresh();
    } catch (error) { setMessage(`Could not decline: ${error.message}`); }
  };
  const unblock = async (peerId) => {
    try {
      await api("POST", `/api/contacts/blocked/${peerId}/unblock`);
      setMessage("Unblocked: their next message or call is a request again."); refresh();
    } catch (error) { setMessage(`Could not unblock: ${error.message}`); }
  };
  const remove = async (contact) => {
    await api("DELETE", `/api/contacts/${encodeURIComponent(contact.name)}`).catch(() => {});
    refresh();
  };
  if (!enabled) {
    return html`<h2 tabindex="-1">Contacts</h2><p class="notice">Contacts need presence: set <code>[presence] enabled = true</code> in the node's config.</p>`;
  }
  return html`<h2 tabindex="-1">Contacts</h2>
  <section class="card" aria-labelledby="add-h"><h3 id="add-h">Add a contact</h3>
    <form onSubmit=${add}>
      <label for="contact-name">Name</label>
      <input id="contact-name" value=${name} onInput=${(e) => setName(e.target.value)} required pattern="[a-z0-9._-]+" />
      <label for="contact-peer">Login, peer id or phone number (+…)</label>
      <input id="contact-peer" value=${peer} onInput=${(e) => setPeer(e.target.value)} required />
      <button type="submit" id="contact-add">Add</button>
    </form>
    <p role="status" id="contacts-message">${message}</p>
  </section>
  ${requests.length ? html`<section class="card" aria-labelledby="req-h"><h3 id="req-h">Requests <span class="badge" id="requests-count">${requests.length}</span></h3>
    <p class="muted">Not in your contacts: their messages wait here and their calls do not ring until you accept.</p>
    <ul class="contacts" aria-live="polite">${requests.map((r, n) => html`<li data-request=${r.peer_id}>
      <div class="mono">${r.peer_id}</div>
      <div>Fingerprint (compare aloud): <span class="mono fingerprint">${fingerprints[r.peer_id] || "…"}</span></div>
      <div>${r.messages} ${r.messages === 1 ? "message" : "messages"}, ${r.calls} ${r.calls === 1 ? "call" : "calls"}${r.preview ? html` — “<em class="preview">${r.preview}</em>”` : ""}</div>
      <label for=${`request-name-${n}`}>Name to keep them as</label>
      <input id=${`request-name-${n}`} class="request-name" pattern="[a-z0-9._-]+" value=${requestNames[r.peer_id] || ""}
        onInput=${(e) => setRequestNames((old) => ({ ...old, [r.peer_id]: e.target.value }))} />
      <button type="button" class="request-accept" aria-label=${`Accept ${r.peer_id}`} onClick=${() => accept(r)}>Accept</button>
      <button type="button" class="secondary request-decline" aria-label=${`Decline and block ${r.peer_id}`} onClick=${() => decline(r)}>Decline</button>
    </li>`)}</ul>
  </section>` : ""}
  <section class="card" aria-labelledby="list-h"><h3 id="list-h">Contacts</h3>
    ${contacts.length === 0 ? html`<p class="muted">No contacts yet.</p>` : html`<ul class="contacts" aria-live="polite">
      ${contacts.map((c) => html`<li data-contact=${c.name} data-presence=${presenceLabel(c)}>
        <span class=${`dot ${c.online === null ? "" : c.online ? "online" : "offline"}`} aria-hidden="true"></span>
        <strong>${c.name}</strong> <span class="presence">${presenceLabel(c)}</span>${c.note ? html` — <em>${c.note}</em>` : ""}
        <div class="mono muted">${c.peer_id}</div>
        <div>Fingerprint (compare aloud): <span class="mono fingerprint">${fingerprints[c.peer_id] || "…"}</span></div>
        <a href=${`#/chat`} class="secondary">Chat</a>
        <button type="button" class="secondary" aria-label=${`Remove ${c.name}`} onClick=${() => remove(c)}>Remove</button>
      </li>`)}</ul>`}
  </section>
  ${blocked.length ? html`<section class="card" aria-labelledby="blocked-h"><h3 id="blocked-h">Blocked</h3>
    <ul class="contacts">${blocked.map((peerId) => html`<li data-blocked=${peerId}>
      <span class="mono">${peerId}</span>
      <button type="button" class="secondary blocked-unblock" aria-label=${`Unblock ${peerId}`} onClick=${() => unblock(peerId)}>Unblock</button>
    </li>`)}</ul>
  </section>` : ""}`;
}
