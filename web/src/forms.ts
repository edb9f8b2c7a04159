// Forms whose errors show next to the field the API names, and which cannot be sent twice.

import { ApiError } from "./api";
import { h } from "./dom";

export interface Field {
  name: string; // the API's field name, as errors name it
  label: string;
  input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement | HTMLElement;
  hint?: string;
}

export function input(name: string, attrs: Record<string, string | boolean> = {}): HTMLInputElement {
  return h("input", { name, id: `f-${name}`, ...attrs });
}

export function select(name: string, options: [string, string][], attrs: Record<string, string | boolean> = {}): HTMLSelectElement {
  return h("select", { name, id: `f-${name}`, ...attrs }, ...options.map(([v, l]) => h("option", { value: v }, l)));
}

export interface Form {
  el: HTMLFormElement;
  error(e: unknown): void;
  clearErrors(): void;
  busy(on: boolean): void;
}

/** The API's field ("keys[0]", "networks[1].x") as the form field that holds it ("keys"). */
export function fieldOf(apiField: string, names: string[]): string | null {
  if (names.includes(apiField)) return apiField;
  const base = apiField.split(/[[.]/)[0];
  return names.includes(base) ? base : null;
}

export function form(fields: Field[], submit: string, onSubmit: (f: Form) => Promise<void>, extra: Node[] = []): Form {
  const slots = new Map<string, HTMLElement>();
  const general = h("div", { class: "error form-error", role: "alert" });
  const button = h("button", { type: "submit", class: "primary" }, submit);
  const rows = fields.map((f) => {
    const slot = h("div", { class: "error", "data-error-for": f.name, role: "alert" });
    slots.set(f.name, slot);
    return h("div", { class: "field" }, h("label", { for: `f-${f.name}` }, f.label), f.input, f.hint ? h("small", {}, f.hint) : null, slot);
  });
  const el = h("form", { class: "form", novalidate: true }, ...rows, ...extra, general, h("div", { class: "actions" }, button));
  const api: Form = {
    el,
    clearErrors() {
      general.textContent = "";
      for (const s of slots.values()) s.textContent = "";
      el.querySelectorAll(".invalid").forEach((n) => n.classList.remove("invalid"));
    },
    error(e: unknown) {
      if (e instanceof ApiError) {
        const name = fieldOf(e.field, [...slots.keys()]);
        if (name) {
          slots.get(name)!.textContent = name === e.field ? e.reason : `${e.field}: ${e.reason}`;
          fields.find((f) => f.name === name)?.input.classList.add("invalid");
          return;
        }
        general.textContent = e.field ? `${e.field}: ${e.reason}` : e.reason;
      } else {
        general.textContent = String(e);
      }
    },
    busy(on: boolean) {
      button.disabled = on;
      el.classList.toggle("busy", on);
    },
  };
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (button.disabled) return;
    api.clearErrors();
    api.busy(true);
    try {
      await onSubmit(api);
    } catch (e) {
      api.error(e);
    } finally {
      api.busy(false);
    }
  });
  return api;
}

/** A button that runs an action once at a time, and shows its error beside it. */
export function action(label: string, run: () => Promise<void>, attrs: Record<string, string> = {}): HTMLElement {
  const out = h("span", { class: "error inline", role: "alert" });
  const b = h("button", { type: "button", ...attrs }, label);
  b.addEventListener("click", async () => {
    if (b.disabled) return;
    if (attrs["data-confirm"] && !confirm(attrs["data-confirm"])) return;
    b.disabled = true;
    out.textContent = "";
    try {
      await run();
    } catch (e) {
      out.textContent = e instanceof ApiError ? e.reason : String(e);
    } finally {
      b.disabled = false;
    }
  });
  return h("span", { class: "act" }, b, out);
}
