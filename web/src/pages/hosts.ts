import { post } from "../api";
import { clear, h, mib, status } from "../dom";
import { action } from "../forms";
import type { Host } from "../types";
import { listing } from "./common";

function bar(label: string, used: number, total: number, show: (n: number) => string): HTMLElement {
  const share = total ? Math.min(used / total, 1) : 0;
  return h("div", { class: "capacity", title: `${label}: ${show(used)} of ${show(total)}` },
    h("span", { class: "capacity-label" }, label),
    h("span", { class: "meter" }, h("span", { class: share > 0.9 ? "fill full" : "fill", style: `width:${(share * 100).toFixed(1)}%` })),
    h("span", { class: "capacity-text" }, `${show(used)} / ${show(total)}`));
}

export function hosts(root: HTMLElement): () => void {
  const list = listing<Host>("hosts", "/v1/hosts", [
    { label: "Host", cell: (x) => h("span", {}, h("strong", {}, x.id), x.router ? " (router)" : "", h("br"), h("small", { class: "mono" }, x.address)) },
    { label: "State", cell: (x) => h("span", {}, status(x.state), x.drained ? status("drained") : "") },
    { label: "Capacity", cell: (x) => h("div", { class: "bars" },
      bar("CPU", x.used.cpu, x.capacity.cpu, String), bar("RAM", x.used.ram_mib, x.capacity.ram_mib, mib),
      bar("SSD", x.used.ssd_mib, x.capacity.ssd_mib, mib), x.capacity.hdd_mib ? bar("HDD", x.used.hdd_mib, x.capacity.hdd_mib, mib) : "") },
    { label: "VMs", cell: (x) => String(x.vms.length) },
    { label: "", cell: (x) => action(x.drained ? "Undrain" : "Drain", async () => {
      await post(`/v1/hosts/${x.id}/${x.drained ? "undrain" : "drain"}`);
      await list.reload();
    }, { "data-act": x.drained ? "undrain" : "drain" }) },
  ], "No host has registered.");
  clear(root, h("h1", {}, "Hosts"), list.el);
  const timer = window.setInterval(() => void list.reload(), 10000);
  return () => clearInterval(timer);
}
