// VMs: the live list, the create form (priced by a quote before it is confirmed), and one
// VM's details: addresses, audit trail, lifecycle buttons and its consoles.

import { del, get, idempotencyKey, post, type Session } from "../api";
import { clear, h, mib, status, when } from "../dom";
import { action, form, input, select } from "../forms";
import { consoleTabs } from "../console";
import * as store from "../vmstore";
import type { AuditLine, Image, Key, Net, Quote, Vm } from "../types";

function ram(text: string): string | number {
  return /^\d+$/.test(text) ? Number(text) : text;
}

function lifecycle(vm: Vm): HTMLElement {
  const intent = (verb: string) => async () => {
    store.put(await post<Vm>(`/v1/vms/${vm.id}/${verb}`, undefined, idempotencyKey()));
  };
  return h(
    "div", { class: "buttons" },
    ["stopped", "crashed"].includes(vm.status) ? action("Start", intent("start"), { "data-act": "start" }) : null,
    ["running", "starting", "crashed"].includes(vm.status) ? action("Stop", intent("stop"), { "data-act": "stop" }) : null,
    vm.status !== "deleting"
      ? action("Delete", async () => store.put(await del<Vm>(`/v1/vms/${vm.id}`)), {
          class: "danger", "data-act": "delete", "data-confirm": `Delete VM ${vm.name}? Its disk goes with it.`,
        })
      : null,
  );
}

function addresses(vm: Vm): string {
  return vm.nics.map((n) => n.address).filter(Boolean).join(", ");
}

export function vmList(root: HTMLElement, _p: string[], session: Session): () => void {
  const table = h("tbody");
  const empty = h("p", { class: "muted" });
  const draw = () => {
    const list = [...store.vms.values()].sort((a, b) => a.name.localeCompare(b.name));
    empty.textContent = !store.loaded ? "Loading…" : list.length ? "" : "No VMs yet: create one below.";
    clear(table, ...list.map((vm) =>
      h("tr", { "data-vm": vm.name },
        h("td", { "data-label": "Name" }, h("a", { href: `#/vms/${vm.id}` }, vm.name)),
        session.realm === "admin" ? h("td", { "data-label": "Owner" }, vm.owner) : null,
        h("td", { "data-label": "Status" }, status(vm.status), vm.reason ? h("small", { class: "reason" }, vm.reason) : null),
        h("td", { "data-label": "Size" }, `${vm.spec.cpu} CPU, ${mib(vm.spec.ram_mib)} RAM, ${mib(vm.spec.ssd_mib)} SSD`),
        h("td", { "data-label": "Addresses", class: "mono" }, addresses(vm)),
        h("td", { "data-label": "" }, lifecycle(vm)),
      )));
  };
  const head = h("tr", {}, h("th", {}, "Name"), session.realm === "admin" ? h("th", {}, "Owner") : null,
    h("th", {}, "Status"), h("th", {}, "Size"), h("th", {}, "Addresses"), h("th", {}, ""));
  const creator = h("section", { class: "card" }, h("h2", {}, "Create a VM"), h("p", { class: "muted" }, "Loading images, networks and keys…"));
  clear(root, h("h1", {}, "VMs"), h("table", { class: "list", id: "vms" }, h("thead", {}, head), table), empty, creator);
  draw();
  const off = store.subscribe(draw);
  void createForm(creator);
  return off;
}

async function createForm(card: HTMLElement): Promise<void> {
  let images: Image[] = [];
  let nets: Net[] = [];
  let keys: Key[] = [];
  try {
    [images, nets, keys] = await Promise.all([get<Image[]>("/v1/images"), get<Net[]>("/v1/networks"), get<Key[]>("/v1/keys")]);
  } catch (e) {
    clear(card, h("h2", {}, "Create a VM"), h("p", { class: "error" }, String(e)));
    return;
  }
  const name = input("name", { required: true, placeholder: "web1" });
  const ready = images.filter((i) => i.status === "created");
  const image = select("image", ready.map((i) => [i.name, `${i.name}${i.public ? " (public)" : ""}`]));
  const cpu = input("cpu", { type: "number", min: "1", value: "1" });
  const ramIn = input("ram", { value: "512M" });
  const ssd = input("ssd", { value: "1G" });
  const checks = (name: string, items: { id: string; label: string }[], checked: boolean) =>
    h("div", { class: "checks", id: `f-${name}` }, ...(items.length ? items.map((i) =>
      h("label", { class: "check" }, h("input", { type: "checkbox", name, value: i.id, checked }), i.label)) : [h("span", { class: "muted" }, "none")]));
  const netBox = checks("networks", nets.filter((n) => n.status === "created").map((n) => ({ id: n.id, label: `${n.name} (${n.ipam})` })), false);
  const keyBox = checks("keys", keys.map((k) => ({ id: k.id, label: k.name })), true);
  const userData = h("textarea", { name: "user_data", id: "f-user_data", rows: 3, placeholder: "#cloud-config" });
  const picked = (box: HTMLElement) => [...box.querySelectorAll<HTMLInputElement>("input:checked")].map((c) => c.value);
  const spec = () => ({ cpu: Number(cpu.value), ram: ram(ramIn.value.trim()), ssd: ram(ssd.value.trim()), image: image.value, networks: picked(netBox) });
  const price = h("div", { class: "quote", id: "quote" });
  let quoted: string | null = null;
  const confirm = h("button", { type: "button", class: "primary", id: "confirm", hidden: true }, "Confirm and create");
  const f = form(
    [
      { name: "name", label: "Name", input: name },
      { name: "image", label: "Image", input: image },
      { name: "cpu", label: "CPUs", input: cpu },
      { name: "ram", label: "RAM", input: ramIn, hint: "e.g. 512M, 2G" },
      { name: "ssd", label: "SSD", input: ssd },
      { name: "networks", label: "Networks", input: netBox },
      { name: "keys", label: "SSH keys", input: keyBox },
      { name: "user_data", label: "User data", input: userData },
    ],
    "Show the price",
    async () => {
      const q = await post<Quote>("/v1/orders/quote", spec());
      quoted = JSON.stringify(spec());
      clear(price,
        h("strong", {}, `${q.per_30_days} ${q.currency} per 30 days`), ` (${q.per_minute} ${q.currency} a minute)`,
        h("ul", {}, ...q.lines.map((l) => h("li", {}, `${l.item}: ${l.quantity} × ${l.unit_price} = ${l.per_minute} a minute`))));
      confirm.hidden = false;
    },
    [price, confirm],
  );
  f.el.addEventListener("input", () => {
    if (quoted !== null && quoted !== JSON.stringify(spec())) {
      quoted = null;
      confirm.hidden = true;
      clear(price, h("span", { class: "muted" }, "The spec changed: show the price again."));
    }
  });
  confirm.addEventListener("click", async () => {
    if (confirm.disabled) return;
    f.clearErrors();
    f.busy(true);
    confirm.disabled = true;
    try {
      const body = { name: name.value.trim(), ...spec(), keys: picked(keyBox), user_data: userData.value || null, order: true };
      const vm = await post<Vm>("/v1/vms", body, idempotencyKey());
      store.put(vm);
      f.el.reset();
      quoted = null;
      confirm.hidden = true;
      clear(price, h("span", { class: "ok" }, `VM ${vm.name} requested.`));
    } catch (e) {
      f.error(e);
    } finally {
      confirm.disabled = false;
      f.busy(false);
    }
  });
  clear(card, h("h2", {}, "Create a VM"), ready.length ? f.el : h("p", { class: "muted" }, "No image is ready: make one on the Images page first."));
}

export function vmDetail(root: HTMLElement, [id]: string[], session: Session): () => void {
  const top = h("div");
  const audit = h("tbody");
  let consoles: { el: HTMLElement; close(): void } | null = null;
  let lastStatus = "";
  const draw = () => {
    const vm = store.vms.get(id) ?? [...store.vms.values()].find((v) => v.name === id);
    if (!vm) {
      clear(top, h("h1", {}, id), h("p", { class: "muted" }, store.loaded ? "This VM is gone." : "Loading…"), h("a", { href: "#/vms" }, "Back to the VMs"));
      return;
    }
    clear(top,
      h("p", {}, h("a", { href: "#/vms" }, "← VMs")),
      h("h1", {}, vm.name, " ", status(vm.status)),
      vm.reason ? h("p", { class: "reason" }, vm.reason) : null,
      lifecycle(vm),
      h("dl", { class: "facts" },
        h("dt", {}, "Id"), h("dd", { class: "mono" }, vm.id),
        h("dt", {}, "Owner"), h("dd", {}, vm.owner),
        h("dt", {}, "Image"), h("dd", {}, vm.image),
        h("dt", {}, "Size"), h("dd", {}, `${vm.spec.cpu} CPU, ${mib(vm.spec.ram_mib)} RAM, ${mib(vm.spec.ssd_mib)} SSD`),
        h("dt", {}, "Host"), h("dd", {}, vm.host || "—"),
        h("dt", {}, "Order"), h("dd", { class: "mono" }, vm.order || "—"),
        h("dt", {}, "Created"), h("dd", {}, when(vm.created_at))),
      h("h2", {}, "Addresses"),
      h("table", { class: "list", id: "addresses" },
        h("thead", {}, h("tr", {}, h("th", {}, "Network"), h("th", {}, "MAC"), h("th", {}, "Address"))),
        h("tbody", {}, ...vm.nics.map((n) => h("tr", {},
          h("td", { "data-label": "Network" }, n.network), h("td", { "data-label": "MAC", class: "mono" }, n.mac),
          h("td", { "data-label": "Address", class: "mono" }, n.address || "—"))))),
      vm.nics.length ? null : h("p", { class: "muted" }, "No network attached."),
    );
    if (!consoles && vm.owner === session.name) {
      consoles = consoleTabs(vm.id);
      root.append(consoles.el);
    }
    if (vm.status !== lastStatus) {
      lastStatus = vm.status;
      void loadAudit(vm.id);
    }
  };
  const loadAudit = async (vm: string) => {
    try {
      const lines = await get<AuditLine[]>(`/v1/vms/${vm}/events`);
      clear(audit, ...lines.map((l) => h("tr", {},
        h("td", { "data-label": "When" }, when(l.at)), h("td", { "data-label": "Who" }, l.actor),
        h("td", { "data-label": "Event" }, l.type), h("td", { "data-label": "What" }, l.summary))));
    } catch (e) {
      clear(audit, h("tr", {}, h("td", { colspan: 4, class: "error" }, String(e))));
    }
  };
  clear(root, top, h("section", {}, h("h2", {}, "Audit trail"), h("table", { class: "list", id: "audit" },
    h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Who"), h("th", {}, "Event"), h("th", {}, "What"))), audit)));
  draw();
  const off = store.subscribe(draw);
  return () => {
    off();
    consoles?.close();
  };
}
