// Talking to the service from a page: where the API is (the page's prefix when a site embeds
// the service), the API key (asked for once, kept in this tab's sessionStorage) and answers
// turned into errors a person can read.

const KEY_ITEM = "userservice.apiKey";
export const root = document.body.dataset.root;

// The service refused the key (401): none was given, or not the right one.
export class KeyRefused extends Error {}

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function headers() {
  const key = storedKey();
  return key === null ? {} : {"X-API-Key": key};
}

// The stream's URL: browsers cannot set headers on an EventSource, so the key goes in the query.
export function streamUrl() {
  const url = new URL(root + "/user/stream", location.href);
  const key = storedKey();
  if (key !== null) url.searchParams.set("api_key", key);
  return url;
}

// JSON from the API (null for 204). Rejects with KeyRefused on 401, with an Error carrying
// the problem's detail on any other refusal, and with a TypeError when the service is out of reach.
export async function call(path, method = "GET") {
  const response = await fetch(root + path, {method, headers: headers(), cache: "no-store"});
  if (response.status === 401) throw new KeyRefused();
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    throw new Error((body && body.detail) || `${method} ${path} failed: ${response.status} ${response.statusText}`);
  }
  return body;
}

// Show the key form with why it is shown; resolves once a key is entered (and stored).
export function askForKey() {
  const form = document.getElementById("key-form");
  const input = form.elements.key;
  const reason = document.getElementById("key-reason");
  reason.textContent = storedKey() === null
    ? "This service needs an API key."
    : "The API key was not accepted (401 Unauthorized). Enter the key the service was started with.";
  sessionStorage.removeItem(KEY_ITEM);
  form.hidden = false;
  input.value = "";
  input.focus();
  return new Promise((resolve) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_ITEM, input.value);
      form.hidden = true;
      resolve();
    }, {once: true});
  });
}

export function showMessage(text) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.hidden = !text;
}
