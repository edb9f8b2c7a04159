// The dashboard's shell: the login screen, the navigation, and a router over the URL's
// fragment (#/vms, #/vms/<id>, #/networks ...). Every page talks to the REST API.

import "./style.css";
import { ApiError, loadSession, post, saveSession, whenUnauthorized, type Session } from "./api";
import { clear, h } from "./dom";
import { form, input } from "./forms";
import * as store from "./vmstore";
import { vmDetail, vmList } from "./pages/vms";
import { networks } from "./pages/networks";
import { files } from "./pages/files";
import { images } from "./pages/images";
import { keys } from "./pages/keys";
import { orders } from "./pages/orders";
import { hosts } from "./pages/hosts";
import { users } from "./pages/users";
import { eventLog } from "./pages/log";
import { vncPage } from "./console";

export type Page = (root: HTMLElement, params: string[], session: Session) => (() => void) | void;

interface RouteDef {
  path: RegExp;
  page: Page;
  title: string;
  nav?: string;
  admin?: boolean;
}

const ROUTES: RouteDef[] = [
  { path: /^\/vms$/, page: vmList, title: "VMs", nav: "#/vms" },
  { path: /^\/vms\/([^/]+)$/, page: vmDetail, title: "VM" },
  { path: /^\/networks$/, page: networks, title: "Networks", nav: "#/networks" },
  { path: /^\/files$/, page: files, title: "Files", nav: "#/files" },
  { path: /^\/images$/, page: images, title: "Images", nav: "#/images" },
  { path: /^\/keys$/, page: keys, title: "SSH keys", nav: "#/keys" },
  { path: /^\/orders$/, page: orders, title: "Orders", nav: "#/orders" },
  { path: /^\/hosts$/, page: hosts, title: "Hosts", nav: "#/hosts", admin: true },
  { path: /^\/users$/, page: users, title: "Users", nav: "#/users", admin: true },
  { path: /^\/log$/, page: eventLog, title: "Event log", nav: "#/log", admin: true },
];

const app = document.getElementById("app")!;
let cleanup: (() => void) | void;
let ticker: number | undefined;

function logout(reason = ""): void {
  saveSession(null);
  store.close();
  if (ticker) clearInterval(ticker);
  showLogin(reason);
}

whenUnauthorized(() => logout("your session ended; log in again"));

function showLogin(reason = ""): void {
  if (cleanup) cleanup();
  cleanup = undefined;
  const name = input("name", { autocomplete: "username", required: true });
  const realm = input("realm", { value: "users", required: true });
  const otp = input("otp", { inputmode: "numeric", autocomplete: "one-time-code", maxlength: "6", pattern: "[0-9]{6}", required: true });
  const f = form(
    [
      { name: "name", label: "Name", input: name },
      { name: "realm", label: "Realm", input: realm },
      { name: "otp", label: "One-time code (6 digits)", input: otp },
    ],
    "Log in",
    async () => {
      const answer = await post<{ token: string; expires_at: string }>("/v1/auth/token", {
        name: name.value.trim(), realm: realm.value.trim(), otp: otp.value.trim(),
      }).catch((e: unknown) => {
        otp.value = "";
        throw e;
      });
      saveSession({ token: answer.token, name: name.value.trim(), realm: realm.value.trim(), expiresAt: answer.expires_at });
      start();
    },
  );
  clear(app, h("main", { class: "login" }, h("h1", {}, "ucloud"), reason ? h("p", { class: "notice" }, reason) : null, f.el));
  name.focus();
}

function expiry(s: Session): string {
  const left = Math.max(0, Date.parse(s.expiresAt) - Date.now()) / 1000;
  const m = Math.floor(left / 60);
  return `token expires ${new Date(s.expiresAt).toLocaleTimeString()} (${m >= 60 ? `${Math.floor(m / 60)} h ${m % 60} min` : `${m} min`})`;
}

function start(): void {
  const query = new URLSearchParams(location.search);
  if (location.pathname === "/ui/vnc" && query.get("vm") && query.get("ticket")) {
    return vncPage(app, query.get("vm")!, query.get("ticket")!);
  }
  const session = loadSession();
  if (!session) return showLogin();
  store.open(() => logout("your token expired; log in again"));
  const admin = session.realm === "admin";
  const links = ROUTES.filter((r) => r.nav && (!r.admin || admin)).map((r) => h("a", { href: r.nav!, "data-nav": r.nav! }, r.title));
  const expires = h("span", { class: "expiry", id: "expiry" }, expiry(session));
  const live = h("span", { class: "live", id: "live", title: "live updates" });
  const menu = h("button", { type: "button", class: "menu", "aria-label": "menu", onclick: () => nav.classList.toggle("open") }, "☰");
  const nav = h("nav", {}, ...links);
  const header = h(
    "header", {},
    h("a", { href: "#/vms", class: "brand" }, "ucloud"), menu, nav,
    h("div", { class: "who" }, live, h("span", { id: "whoami" }, `${session.name}@${session.realm}`), expires,
      h("button", { type: "button", id: "logout", onclick: () => logout() }, "Log out")),
  );
  const main = h("main", { id: "page" });
  clear(app, header, main);
  if (ticker) clearInterval(ticker);
  ticker = window.setInterval(() => {
    const s = loadSession();
    if (!s) return logout("your token expired; log in again");
    expires.textContent = expiry(s);
  }, 15000);
  const showLive = () => live.classList.toggle("on", store.live);
  store.subscribe(showLive);
  route();
}

function route(): void {
  const session = loadSession();
  const main = document.getElementById("page");
  if (!session || !main) return;
  if (cleanup) cleanup();
  cleanup = undefined;
  const path = location.hash.replace(/^#/, "") || "/vms";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", path.startsWith(a.getAttribute("data-nav")!.slice(1))));
  document.querySelector("nav")?.classList.remove("open");
  for (const r of ROUTES) {
    const m = r.path.exec(path);
    if (!m) continue;
    if (r.admin && session.realm !== "admin") break;
    document.title = `${r.title} · ucloud`;
    clear(main);
    try {
      cleanup = r.page(main, m.slice(1).map(decodeURIComponent), session);
    } catch (e) {
      clear(main, h("p", { class: "error" }, e instanceof ApiError ? e.reason : String(e)));
    }
    return;
  }
  clear(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/vms" }, "Back to the VMs")));
}

window.addEventListener("hashchange", route);
start();
