// A VM's two consoles, in tabs: the serial console in a terminal (@xterm/xterm) and the
// screen over VNC (@novnc/novnc). Both are WebSockets to the gateway at
// /v1/vms/{id}/console?kind=serial|vnc; the socket carries the bearer token as its
// subprotocol ("bearer.<token>"), so it never appears in a URL. The backend of these
// sockets is the console service's; this component only opens them and shows what
// they carry (and says so plainly when the gateway refuses or does not offer them).
// xterm and noVNC load only when a tab is opened.

import { loadSession } from "./api";
import { clear, h } from "./dom";

export function consoleUrl(vm: string, kind: "serial" | "vnc"): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/vms/${encodeURIComponent(vm)}/console?kind=${kind}`;
}

export function consoleProtocols(): string[] {
  const s = loadSession();
  return s ? [`bearer.${s.token}`] : [];
}

interface Tab {
  close(): void;
}

async function serial(vm: string, pane: HTMLElement, state: HTMLElement): Promise<Tab> {
  const { Terminal } = await import("@xterm/xterm");
  const term = new Terminal({ convertEol: true, cursorBlink: true, fontSize: 13, rows: 24 });
  const box = h("div", { class: "terminal" });
  pane.append(box);
  term.open(box);
  const ws = new WebSocket(consoleUrl(vm, "serial"), consoleProtocols());
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

async function vnc(vm: string, pane: HTMLElement, state: HTMLElement): Promise<Tab> {
  const { default: RFB } = await import("@novnc/novnc");
  const screen = h("div", { class: "screen" });
  pane.append(screen);
  const rfb = new RFB(screen, consoleUrl(vm, "vnc"), { wsProtocols: consoleProtocols() });
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
  const openTab = async (kind: "serial" | "vnc", button: HTMLElement) => {
    generation++;
    const mine = generation;
    current?.close();
    current = null;
    clear(pane);
    el.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("active", b === button));
    state.textContent = "connecting…";
    try {
      const tab = await (kind === "serial" ? serial : vnc)(vm, pane, state);
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
