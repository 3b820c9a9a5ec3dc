// GET /: who is signed in on this device, kept live by the stream's Server-Sent Events.
//
// Only the stream says who is current: each event carries the change's seq as its id, and an
// event whose id is not above the last one shown is dropped, so the page never goes back to an
// older state. EventSource itself reconnects after a drop and sends Last-Event-ID, so the
// server replays what was missed; when it gives up (an error status, e.g. 503 while the server
// restarts) a new stream is opened, which starts from the current state.
import {KeyRefused, askForKey, call, showMessage, streamUrl} from "./client.js";
import {displayName, profileCard, userRow} from "./render.js";

const RETRY_MS = 1000;
const CONNECTION_TEXT = {connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…",
                         key: "API key needed"};

const state = {
  source: null,      // the EventSource in use; events of any other are ignored
  shownSeq: -1,      // the id of the state on screen
  current: null,     // the current user's id, or null
  users: [],         // the users as last listed
  listAsked: 0,      // list requests sent, and the latest of them whose answer is shown:
  listShown: 0,      // an answer overtaken by a later request's answer is dropped
  starting: null,    // the start under way, if any: there is only ever one
};

function setConnection(name) {
  const element = document.getElementById("connection");
  element.dataset.state = name;
  element.textContent = CONNECTION_TEXT[name];
}

function showCurrent(profile, seq) {
  const current = document.getElementById("current");
  state.shownSeq = seq;
  state.current = profile ? profile.id : null;
  current.dataset.seq = seq;
  current.replaceChildren(...(profile ? [profileCard(profile)] : []));
  document.getElementById("nobody").hidden = Boolean(profile);
  showUsers(state.users);
}

function showUsers(users) {
  state.users = users;
  document.getElementById("users").replaceChildren(
    ...users.map((profile) => userRow(profile, profile.id === state.current)));
  document.getElementById("no-users").hidden = users.length > 0;
}

async function listUsers(request = () => call("/users")) {
  const asked = ++state.listAsked;
  const users = await request();
  if (asked > state.listShown) {
    state.listShown = asked;
    showUsers(users.iterable);
  }
}

function receive(event) {
  const seq = Number(event.lastEventId);
  if (!(seq > state.shownSeq)) return;
  showCurrent(JSON.parse(event.data), seq);
  listUsers().catch(report);
}

function openStream() {
  const source = new EventSource(streamUrl());
  state.source = source;
  source.addEventListener("open", () => state.source === source && setConnection("live"));
  source.addEventListener("message", (event) => state.source === source && receive(event));
  source.addEventListener("error", () => {
    if (state.source !== source) return;
    setConnection("reconnecting");
    if (source.readyState === EventSource.CLOSED) setTimeout(restart, RETRY_MS);
  });
}

// List the users (which also proves the key), then follow the stream; ask for the key while
// it is refused, and try again while the service is out of reach.
function restart() {
  if (state.source) state.source.close();
  state.source = null;
  state.starting = state.starting || start().finally(() => { state.starting = null; });
}

async function start() {
  for (;;) {
    try {
      await listUsers();
      openStream();
      return;
    } catch (error) {
      if (error instanceof KeyRefused) {
        setConnection("key");
        await askForKey();
      } else if (error instanceof TypeError) {
        setConnection("reconnecting");
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      } else {
        report(error);
        openStream();
        return;
      }
    }
  }
}

function report(error) {
  if (error instanceof KeyRefused) {
    restart();
  } else if (error instanceof TypeError) {
    showMessage("The service could not be reached; try again once it is back.");
  } else {
    showMessage(error.message);
  }
}

// Run an action with its button disabled; what it changed arrives through the stream.
async function act(button, action) {
  button.disabled = true;
  showMessage("");
  try {
    await action();
  } catch (error) {
    report(error);
  } finally {
    button.disabled = false;
  }
}

function userPath(id, verb) {
  return `/users/${encodeURIComponent(id)}/${verb}`;
}

function confirmDisconnect(profile) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-name").textContent = displayName(profile);
  dialog.showModal();
  return new Promise((resolve) => {
    const answer = (yes) => () => {
      dialog.close();
      resolve(yes);
    };
    document.getElementById("confirm-yes").onclick = answer(true);
    document.getElementById("confirm-no").onclick = answer(false);
    dialog.oncancel = answer(false);
  });
}

async function disconnect(id) {
  const profile = state.users.find((user) => user.id === id) || {id};
  if (await confirmDisconnect(profile)) {
    await listUsers(() => call(userPath(id, "disconnect"), "POST"));
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const id = button.closest("[data-id]") && button.closest("[data-id]").dataset.id;
  const actions = {
    clear: () => call("/user/clear", "POST"),
    select: () => call(userPath(id, "select"), "POST"),
    disconnect: () => disconnect(id),
  };
  act(button, actions[button.dataset.action]);
});

// Changes to users other than the current one are not streamed: list again when looked at.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") listUsers().catch(report);
});

restart();
