// The shell: navigation, the API helper, the live event stream. Views live in views/*.js.
import { h, render } from "preact";
import { useEffect, useState } from "preact/hooks";
import htm from "htm";
import { IdentityView } from "./views/identity.js";
import { StatusView } from "./views/status.js";
import { ContactsView, useNavCounts } from "./views/contacts.js";
import { ChatView } from "./views/chat.js";
import { CallsView, IncomingCallAlert } from "./views/calls.js";
import { SipView } from "./views/sip.js";
import { SettingsView } from "./views/settings.js";

export const html = htm.bind(h);

/** JSON request to our own origin; the session cookie goes along, the token never does. */
export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const answer = await fetch(path, init);
  const type = answer.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await answer.json() : await answer.text();
  if (!answer.ok) {
    const error = new Error((data && data.detail) || (data && data.error) || answer.statusText);
    error.status = answer.status;
    throw error;
  }
  return data;
}

const VIEWS = [
  ["identity", "Identity", IdentityView],
  ["status", "Status", StatusView],
  ["contacts", "Contacts", ContactsView],
  ["chat", "Chat", ChatView],
  ["calls", "Calls", CallsView],
  ["sip", "SIP equipment", SipView],
  ["settings", "Settings", SettingsView],
];

function currentRoute() {
  const name = location.hash.replace(/^#\/?/, "");
  return VIEWS.some(([key]) => key === name) ? name : "identity";
}

function App() {
  const [route, setRoute] = useState(currentRoute());
  const [me, setMe] = useState(null);
  const [failure, setFailure] = useState(null);
  const [paths, setPaths] = useState(new Set());
  const [events, setEvents] = useState([]);
  const [eventCount, setEventCount] = useState(0); // grows forever; the list is bounded
  const [live, setLive] = useState(false);
  const counts = useNavCounts(paths, eventCount, Boolean(me)); // nav badges (views/contacts.js)

  useEffect(() => {
    const onHash = () => setRoute(currentRoute());
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);
  useEffect(() => {
    api("GET", "/app/whoami").then(setMe, setFailure);
    api("GET", "/api/openapi.json").then((doc) => setPaths(new Set(Object.keys(doc.paths))), () => {});
  }, []);
  useEffect(() => {
    if (!me) return undefined;
    let socket = null;
    let stopped = false;
    const connect = () => {
      socket = new WebSocket(`ws://${location.host}/api/events`);
      socket.onopen = () => setLive(true);
      socket.onmessage = (message) => {
        const event = JSON.parse(message.data);
        setEvents((old) => [...old.slice(-199), event]);
        setEventCount((n) => n + 1);
      };
      socket.onclose = () => {
        setLive(false);
        if (!stopped) setTimeout(connect, 2000);
      };
    };
    connect();
    return () => { stopped = true; if (socket) socket.close(); };
  }, [me]);
  useEffect(() => {
    const title = VIEWS.find(([key]) => key === route)[1];
    document.title = `${title} · p2pnode`;
    const heading = document.querySelector("main h2");
    if (heading) heading.focus();
  }, [route, me]);

  if (failure) {
    return html`<main class="signin" role="main"><h2>p2pnode</h2>
      <p class="error" role="alert">${failure.status === 401
        ? "Not signed in. Run `p2pnode app` in a terminal to open the app." : failure.message}</p></main>`;
  }
  if (!me) return html`<p class="loading" role="status">Loading…</p>`;
  const [, , View] = VIEWS.find(([key]) => key === route);
  return html`<div class="shell">
    <nav aria-label="Sections"><h1>p2pnode</h1><ul>
      ${VIEWS.map(([key, title]) => html`<li><a href=${`#/${key}`} id=${`nav-${key}`}
        aria-current=${route === key ? "page" : undefined}>${title}${counts[key] ? html` <span class="badge"
        data-count=${counts[key]} aria-label=${`${counts[key]} new`}>${counts[key]}</span>` : ""}</a></li>`)}
    </ul>
    <p class="status-line" role="status" id="live">${live ? "● live" : "○ reconnecting…"}</p></nav>
    <main><${IncomingCallAlert} paths=${paths} eventCount=${eventCount} />
      <${View} me=${me} paths=${paths} events=${events} eventCount=${eventCount} /></main>
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));
