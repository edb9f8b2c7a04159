// Orders (the agreed prices) and this month's invoice, with a plot of the cost per day.

import { ApiError, get } from "../api";
import { clear, h, mib, svg, when } from "../dom";
import type { Order } from "../types";
import { card, listing } from "./common";

interface InvoiceDay {
  day: string;
  minutes: number;
  totals: Record<string, string>;
}
interface Invoice {
  start: string;
  end: string;
  vms: { vm: string; name: string; owner: string; minutes: number; currency: string; total: string }[];
  totals: Record<string, string>;
  days: InvoiceDay[];
}

/** Bars of the cost of each day, with the running total as a line (hand-drawn SVG). */
export function usagePlot(days: InvoiceDay[], currency: string): SVGElement {
  const W = 600, H = 200, L = 50, B = 24, T = 10;
  const daily = days.map((d) => Number(d.totals[currency] ?? "0"));
  const cumulative = daily.reduce<number[]>((acc, v) => [...acc, (acc.at(-1) ?? 0) + v], []);
  const top = Math.max(cumulative.at(-1) ?? 0, 1e-9);
  const step = (W - L) / Math.max(days.length, 1);
  const y = (v: number) => H - B - (v / top) * (H - B - T);
  const bars = daily.map((v, i) => svg("rect", { x: L + i * step + 1, y: y(v), width: Math.max(step - 2, 1), height: H - B - y(v), class: "bar" },
    svg("title", {}, `${days[i].day}: ${v} ${currency}`)));
  const line = svg("polyline", { class: "line", fill: "none", points: cumulative.map((v, i) => `${L + (i + 0.5) * step},${y(v)}`).join(" ") });
  const labels = days.map((d, i) => (i % 5 === 0 ? svg("text", { x: L + i * step, y: H - 6, class: "axis" }, d.day.slice(5)) : null)).filter((n): n is SVGElement => n !== null);
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", id: "usage-plot", role: "img", "aria-label": "cost per day this month" },
    svg("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis-line" }),
    svg("text", { x: 2, y: T + 8, class: "axis" }, top.toPrecision(3)), svg("text", { x: 2, y: H - B, class: "axis" }, "0"),
    ...bars, line, ...labels);
}

async function invoiceCard(box: HTMLElement): Promise<void> {
  try {
    const inv = await get<Invoice>("/v1/invoice");
    const currencies = Object.keys(inv.totals);
    const currency = currencies[0] ?? "";
    clear(box,
      h("p", {}, `From ${when(inv.start)} to ${when(inv.end)}: `,
        h("strong", { id: "invoice-total" }, currencies.length ? currencies.map((c) => `${inv.totals[c]} ${c}`).join(", ") : "nothing yet")),
      currency ? usagePlot(inv.days, currency) : h("p", { class: "muted" }, "No VM has run this month."),
      currency ? h("p", { class: "muted legend" }, "Bars: what each day cost; line: the month's total so far.") : null,
      h("table", { class: "list" }, h("thead", {}, h("tr", {}, h("th", {}, "VM"), h("th", {}, "Owner"), h("th", {}, "Minutes"), h("th", {}, "Amount"))),
        h("tbody", {}, ...inv.vms.map((v) => h("tr", {}, h("td", { "data-label": "VM" }, v.name), h("td", { "data-label": "Owner" }, v.owner),
          h("td", { "data-label": "Minutes" }, String(v.minutes)), h("td", { "data-label": "Amount" }, `${v.total} ${v.currency}`))))));
  } catch (e) {
    clear(box, h("p", { class: "error" }, e instanceof ApiError ? e.reason : String(e)));
  }
}

export function orders(root: HTMLElement): void {
  const list = listing<Order>("orders", "/v1/orders", [
    { label: "Placed", cell: (o) => when(o.placed_at) },
    { label: "VM", cell: (o) => h("a", { href: `#/vms/${o.vm}`, class: "mono" }, o.vm.slice(0, 8)) },
    { label: "Spec", cell: (o) => `${o.spec.cpu} CPU, ${mib(o.spec.ram_mib)}, ${mib(o.spec.ssd_mib)} SSD${o.image ? `, ${o.image}` : ""}` },
    { label: "Per minute", cell: (o) => `${o.per_minute} ${o.currency}` },
  ], "No orders yet.");
  const invoice = h("div", {}, h("p", { class: "muted" }, "Adding up this month…"));
  clear(root, h("h1", {}, "Orders and invoice"), card("This month", invoice), h("h2", {}, "Orders"), list.el);
  void invoiceCard(invoice);
}
