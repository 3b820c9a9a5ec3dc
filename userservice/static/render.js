// Profiles as HTML, from the page's <template>s. Every value is set as text, never as markup.

const dates = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "short"});

export function displayName(profile) {
  return profile.name || profile.username || profile.email || profile.id;
}

export function initials(profile) {
  const words = displayName(profile).split(/[\s._@-]+/).filter(Boolean);
  return words.slice(0, 2).map((word) => word[0].toUpperCase()).join("") || "?";
}

function when(timestamp) {
  if (!timestamp || !timestamp.value) return "";
  const moment = new Date(timestamp.value);
  return Number.isNaN(moment.getTime()) ? timestamp.value : dates.format(moment);
}

function betaRange(beta) {
  if (!beta) return "";
  const from = when(beta.from), to = when(beta.to);
  if (from && to) return `${from} – ${to}`;
  if (from) return beta.continuous === false ? `on ${from}` : `since ${from}`;
  return to ? `until ${to}` : "enrolled";
}

function providers(profile) {
  const list = (profile.providers && profile.providers.iterable) || [];
  return list.map((provider) => `${provider.type} (${provider.user_id})`).join(", ");
}

function vanityUrl(profile) {
  const vanity = profile.allocation && profile.allocation.urls && profile.allocation.urls.vanity;
  return (vanity && vanity.url) || "";
}

// The picture when it loads, the initials until then (and for good when there is none, when it
// is not https, or when it fails to load: offline, say).
function fillAvatar(avatar, profile) {
  avatar.querySelector(".initials").textContent = initials(profile);
  const image = avatar.querySelector("img");
  if (!/^(https:|data:image\/)/.test(profile.picture || "")) return;
  image.addEventListener("load", () => {
    image.hidden = false;
    avatar.querySelector(".initials").hidden = true;
  });
  image.src = profile.picture;
}

function field(card, name, text, href) {
  const row = card.querySelector(`[data-field="${name}"]`);
  const value = row.querySelector("dd");
  row.hidden = !text;
  if (href) {
    const link = document.createElement("a");
    link.href = href;
    link.rel = "noopener noreferrer";
    link.textContent = text;
    value.replaceChildren(link);
  } else {
    value.textContent = text;
  }
}

export function profileCard(profile) {
  const card = document.getElementById("profile-template").content.firstElementChild.cloneNode(true);
  card.dataset.id = profile.id;
  fillAvatar(card.querySelector(".avatar"), profile);
  card.querySelector(".name").textContent = displayName(profile);
  field(card, "email", profile.email || "");
  field(card, "username", profile.username ? `@${profile.username}` : "");
  const vanity = vanityUrl(profile);
  field(card, "vanity", vanity || profile.vanityname || "", /^https:\/\//.test(vanity) ? vanity : null);
  field(card, "beta", betaRange(profile.auth0 && profile.auth0.beta));
  field(card, "providers", providers(profile));
  field(card, "created", when(profile.created));
  field(card, "updated", when(profile.updated));
  field(card, "id", profile.id);
  return card;
}

export function userRow(profile, isCurrent) {
  const row = document.getElementById("user-template").content.firstElementChild.cloneNode(true);
  row.dataset.id = profile.id;
  fillAvatar(row.querySelector(".avatar"), profile);
  row.querySelector(".name").textContent = displayName(profile);
  row.querySelector(".sub").textContent = [profile.username && `@${profile.username}`, profile.email]
    .filter(Boolean).join(" · ");
  row.querySelector(".badge").hidden = !isCurrent;
  row.querySelector('[data-action="select"]').disabled = isCurrent;
  row.classList.toggle("current", isCurrent);
  return row;
}
