import { del, post } from "../api";
import { clear, h } from "../dom";
import { action, form, input } from "../forms";
import type { Key } from "../types";
import { card, listing } from "./common";

export function keys(root: HTMLElement): void {
  const list = listing<Key>("keys", "/v1/keys", [
    { label: "Name", cell: (k) => k.name },
    { label: "Key", cell: (k) => h("span", { class: "mono clip", title: k.public_key }, k.public_key) },
    { label: "", cell: (k) => action("Remove", async () => { await del(`/v1/keys/${k.id}`); await list.reload(); }, { class: "danger", "data-confirm": `Remove key ${k.name}?` }) },
  ], "No SSH keys yet.");
  const name = input("name", { required: true });
  const key = h("textarea", { name: "public_key", id: "f-public_key", rows: 3, placeholder: "ssh-ed25519 AAAA… you@laptop" });
  const f = form([{ name: "name", label: "Name", input: name }, { name: "public_key", label: "Public key", input: key }], "Add key", async () => {
    await post("/v1/keys", { name: name.value.trim(), public_key: key.value.trim() });
    f.el.reset();
    await list.reload();
  });
  clear(root, h("h1", {}, "SSH keys"), list.el, card("Add an SSH key", f.el));
}
