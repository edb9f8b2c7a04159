// The admin's live tail of the event log (/v1/stream/log).

import { stream } from "../api";
import { clear, h, when } from "../dom";

interface Line {
  seq: number;
  subject: string;
  time: string;
  type: string;
  actor: string;
  data: string;
}

const KEEP = 500;

export function eventLog(root: HTMLElement): () => void {
  const body = h("tbody");
  const state = h("span", { class: "muted" }, "connecting…");
  let paused = false;
  const pause = h("button", { type: "button", onclick: () => { paused = !paused; pause.textContent = paused ? "Resume" : "Pause"; } }, "Pause");
  clear(root, h("h1", {}, "Event log"), h("div", { class: "buttons" }, pause, state),
    h("table", { class: "list log", id: "log" }, h("thead", {}, h("tr", {}, h("th", {}, "Seq"), h("th", {}, "Time"), h("th", {}, "Type"), h("th", {}, "Actor"), h("th", {}, "Subject"))), body));
  const handle = stream("/v1/stream/log?last=100", (name, data) => {
    if (name !== "event" || paused) return;
    const line = JSON.parse(data) as Line;
    const row = h("tr", { title: line.data },
      h("td", { "data-label": "Seq" }, String(line.seq)), h("td", { "data-label": "Time" }, when(line.time)),
      h("td", { "data-label": "Type" }, line.type), h("td", { "data-label": "Actor" }, line.actor),
      h("td", { "data-label": "Subject", class: "mono clip" }, line.subject));
    body.prepend(row);
    while (body.children.length > KEEP) body.lastElementChild?.remove();
  }, (live) => (state.textContent = live ? "live" : "reconnecting…"));
  return () => handle.close();
}
