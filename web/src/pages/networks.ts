import { del, post } from "../api";
import { clear, h, status } from "../dom";
import { action, form, input, select } from "../forms";
import type { Net } from "../types";
import { card, listing } from "./common";

export function networks(root: HTMLElement): void {
  const list = listing<Net>("networks", "/v1/networks", [
    { label: "Name", cell: (n) => n.name },
    { label: "IPAM", cell: (n) => n.ipam },
    { label: "Status", cell: (n) => h("span", {}, status(n.status), n.reason ? h("small", { class: "reason" }, n.reason) : null) },
    { label: "Prefix", cell: (n) => h("span", { class: "mono" }, n.prefix || "—") },
    { label: "VNI", cell: (n) => String(n.vni || "—") },
    { label: "", cell: (n) => action("Delete", async () => { await del(`/v1/networks/${n.id}`); await list.reload(); }, { class: "danger", "data-confirm": `Delete network ${n.name}?` }) },
  ], "No networks yet.");
  const name = input("name", { required: true });
  const ipam = select("ipam", [["none", "none: layer 2 only"], ["manual", "manual: a /64, no router adverts"], ["auto", "auto: a /64 with router adverts"]]);
  const f = form([{ name: "name", label: "Name", input: name }, { name: "ipam", label: "IPAM", input: ipam }], "Create network", async () => {
    await post("/v1/networks", { name: name.value.trim(), ipam: ipam.value });
    f.el.reset();
    await list.reload();
  });
  clear(root, h("h1", {}, "Networks"), list.el, card("Create a network", f.el));
}
