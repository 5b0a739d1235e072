// Chat: conversations, history, receipts, unread counts, offline-queue state.
// The control API has no messaging routes yet: the view says so and lists what it will show.
import { html } from "../app.js";

export const CHAT_PATH = "/api/messages";

export function ChatView({ paths }) {
  const ready = paths.has(CHAT_PATH);
  return html`<h2 tabindex="-1">Chat</h2>
  ${ready ? "" : html`<p class="notice" role="status" id="chat-missing">
    This node's control API does not offer messaging yet (no <code>${CHAT_PATH}</code>).
    Messages sent from the command line still reach your contacts.</p>`}
  <section class="card" aria-labelledby="conv-h"><h3 id="conv-h">Conversations</h3>
    <p class="muted">Each conversation shows delivered and read receipts, unread counts, gaps in
    the history, and “queued for offline delivery (N copies held)” while a contact is away.</p>
    <form onSubmit=${(e) => e.preventDefault()}>
      <label for="chat-text">Message</label>
      <textarea id="chat-text" rows="2" disabled=${!ready}></textarea>
      <button type="submit" disabled=${!ready}>Send</button>
    </form>
  </section>`;
}
