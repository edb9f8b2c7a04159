// A VM's two consoles, in tabs: the serial console in a terminal (@xterm/xterm) and the
// screen over VNC (@novnc/novnc). Each tab first asks the gateway for a console ticket
// (POST /v1/vms/{id}/console-tickets {kind}, with the session's bearer token): a short-lived,
// single-use ticket bound to the user and the VM; the WebSocket then goes to the path the
// ticket names (/v1/vms/{id}/console/{kind}?ticket=...), so the token itself never appears
// in a URL. `ucloud vm vnc` prints /ui/vnc?vm=...&ticket=..., which `vncPage` shows with
// the ticket it carries. xterm and noVNC load only when a console opens.

import { post } from "./api";
import { clear, h } from "./dom";

type Kind = "serial" | "vnc";

interface Ticket {
  ticket: string;
  path: string;
}

export function socketUrl(path: string): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

export function ticketPath(vm: string, kind: Kind, ticket: string): string {
  const id = encodeURIComponent(vm);
  return `/v1/vms/${id}/console/${kind}?ticket=${encodeURIComponent(ticket)}`;
}

async function ticketFor(vm: string, kind: Kind): Promise<string> {
  const granted = await post<Ticket>(`/v1/vms/${encodeURIComponent(vm)}/console-tickets`, { kind });
  return socketUrl(granted.path);
}

interface Tab {
  close(): void;
}

async function serial(url: string, pane: HTMLElement, state: HTMLElement): Promise<Tab> {
  const { Terminal } = await import("@xterm/xterm");
  const term = new Terminal({ convertEol: true, cursorBlink: true, fontSize: 13, rows: 24 });
  const box = h("div", { class: "terminal" });
  pane.append(box);
  term.open(box);
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => (state.textContent = "connected");
  ws.onclose = (e) => (state.textContent = `closed${e.reason ? `: ${e.reason}` : ""} (code ${e.code})`);
  ws.onerror = () => (state.textContent = "the gateway offers no serial console for this VM");
  ws.onmessage = (e) => term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data as ArrayBuffer));
  const input = term.onData((d) => ws.readyState === WebSocket.OPEN && ws.send(new TextEncoder().encode(d)));
  return {
    close() {
      input.dispose();
      ws.close();
      term.dispose();
    },
  };
}

async function vnc(url: string, pane: HTMLElement, state: HTMLElement): Promise<Tab> {
  const { default: RFB } = await import("@novnc/novnc");
  const screen = h("div", { class: "screen" });
  pane.append(screen);
  const rfb = new RFB(screen, url, { wsProtocols: ["binary"] });
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => (state.textContent = "connected"));
  rfb.addEventListener("disconnect", (e: Event) => {
    const clean = (e as CustomEvent<{ clean: boolean }>).detail?.clean;
    state.textContent = clean ? "disconnected" : "the gateway offers no VNC console for this VM";
  });
  return { close: () => rfb.disconnect() };
}

export function consoleTabs(vm: string): { el: HTMLElement; close(): void } {
  const pane = h("div", { class: "console-pane" });
  const state = h("span", { class: "muted console-state" });
  let current: Tab | null = null;
  let generation = 0;
  const openTab = async (kind: Kind, button: HTMLElement) => {
    generation++;
    const mine = generation;
    current?.close();
    current = null;
    clear(pane);
    el.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("active", b === button));
    state.textContent = "connecting…";
    try {
      const url = await ticketFor(vm, kind);
      const tab = await (kind === "serial" ? serial : vnc)(url, pane, state);
      if (mine !== generation) tab.close();
      else current = tab;
    } catch (e) {
      state.textContent = `cannot open the console: ${String(e)}`;
    }
  };
  const serialButton: HTMLElement = h("button", { type: "button", onclick: () => void openTab("serial", serialButton) }, "Serial console");
  const vncButton: HTMLElement = h("button", { type: "button", onclick: () => void openTab("vnc", vncButton) }, "Screen (VNC)");
  const el = h("section", { class: "consoles", id: "consoles" }, h("h2", {}, "Consoles"),
    h("div", { class: "tabs", role: "tablist" }, serialButton, vncButton, state), pane);
  return {
    el,
    close() {
      generation++;
      current?.close();
    },
  };
}

// The page /ui/vnc?vm=<id>&ticket=<t> (what `ucloud vm vnc` prints): the VM's screen, with
// the ticket of the URL; no login needed, the ticket is the permission (once).
export function vncPage(root: HTMLElement, vm: string, ticket: string): void {
  const state = h("span", { class: "muted console-state" }, "connecting…");
  const pane = h("div", { class: "console-pane" });
  clear(root, h("main", { id: "page" }, h("h1", {}, `Screen of ${vm}`), state, pane));
  void vnc(socketUrl(ticketPath(vm, "vnc", ticket)), pane, state).catch(
    (e) => (state.textContent = `cannot open the console: ${String(e)}`),
  );
}
