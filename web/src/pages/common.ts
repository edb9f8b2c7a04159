// A page of one kind of resource: its table (loaded from the API, reloaded after each
// change) and, under it, the form that makes one.

import { ApiError, get } from "../api";
import { clear, h } from "../dom";

export interface Column<T> {
  label: string;
  cell: (item: T) => Node | string;
}

export interface Listing<T> {
  el: HTMLElement;
  reload(): Promise<void>;
  items(): T[];
}

export function listing<T>(id: string, path: string, columns: Column<T>[], empty: string): Listing<T> {
  const body = h("tbody");
  const note = h("p", { class: "muted" }, "Loading…");
  let items: T[] = [];
  const el = h("div", {}, h("table", { class: "list", id }, h("thead", {}, h("tr", {}, ...columns.map((c) => h("th", {}, c.label)))), body), note);
  const reload = async () => {
    try {
      items = await get<T[]>(path);
      note.textContent = items.length ? "" : empty;
      note.className = "muted";
      clear(body, ...items.map((item) => h("tr", {}, ...columns.map((c) => h("td", { "data-label": c.label }, c.cell(item))))));
    } catch (e) {
      note.textContent = e instanceof ApiError ? e.reason : String(e);
      note.className = "error";
    }
  };
  void reload();
  return { el, reload, items: () => items };
}

export function card(title: string, ...children: Node[]): HTMLElement {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}
