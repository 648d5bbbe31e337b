// The web chat app's entry: sign in (or create an account), then the chat. The
// login lives in sessionStorage, so a reload keeps it and two tabs may be two users.

import { Http, HttpError, type Login } from "../index.js";
import { h, byId } from "./dom.js";
import { Chat } from "./chat.js";

const LOGIN_KEY = "courier.login";
const DEVICE_KEY = "courier.device";

interface Saved {
  token: string;
  userId: string;
  name: string;
}

const http = new Http(location.origin);

/** This tab's device id: one per tab, kept across reloads. */
function deviceId(): string {
  let id = sessionStorage.getItem(DEVICE_KEY);
  if (!id) {
    id = `web-${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
    sessionStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

function signIn(notice = ""): void {
  const root = byId("root");
  const error = h("p", { class: "error", role: "alert", id: "sign-in-error" }, notice);
  const name = h("input", { name: "name", autocomplete: "username", required: true, "aria-label": "User name" });
  const password = h("input", {
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
    minlength: 8,
    "aria-label": "Password",
  });
  const submit = async (create: boolean) => {
    error.textContent = "";
    try {
      if (create) await http.register(name.value.trim(), password.value);
      const login = await http.login(name.value.trim(), password.value);
      sessionStorage.setItem(
        LOGIN_KEY,
        JSON.stringify({ token: login.token, userId: String(login.userId), name: login.name } satisfies Saved),
      );
      await enter(login);
    } catch (e) {
      error.textContent = e instanceof HttpError ? e.message.replace(/^\d+ \w+: /, "") : String(e);
    }
  };
  const form = h(
    "form",
    {
      id: "sign-in",
      class: "sign-in",
      onsubmit: (e) => {
        e.preventDefault();
        void submit(false);
      },
    },
    h("h1", {}, "Courier"),
    h("label", {}, "Name", name),
    h("label", {}, "Password", password),
    h(
      "div",
      { class: "row" },
      h("button", { type: "submit", id: "sign-in-button" }, "Sign in"),
      h(
        "button",
        {
          type: "button",
          id: "register-button",
          class: "secondary",
          onclick: () => {
            if (form.reportValidity()) void submit(true);
          },
        },
        "Create account",
      ),
    ),
    error,
  );
  root.replaceChildren(form);
  name.focus();
}

async function enter(login: Login): Promise<void> {
  const chat = new Chat(http.withToken(login.token), login, deviceId(), (why) => {
    sessionStorage.removeItem(LOGIN_KEY);
    signIn(why);
  });
  await chat.start(byId("root"));
}

async function boot(): Promise<void> {
  const saved = sessionStorage.getItem(LOGIN_KEY);
  if (saved) {
    const s = JSON.parse(saved) as Saved;
    try {
      await enter({ token: s.token, userId: BigInt(s.userId), name: s.name, expiresAtMs: 0 });
      return;
    } catch {
      sessionStorage.removeItem(LOGIN_KEY);
    }
  }
  signIn();
}

void boot();
