import { del, get, post, type Session } from "../api";
import { bytes, clear, h, status } from "../dom";
import { action, form, input, select } from "../forms";
import type { FileInfo, Image } from "../types";
import { card, listing } from "./common";

export function images(root: HTMLElement, _p: string[], session: Session): void {
  const list = listing<Image>("images", "/v1/images", [
    { label: "Name", cell: (i) => i.name },
    { label: "Owner", cell: (i) => (i.public ? `${i.owner} (public)` : i.owner) },
    { label: "Status", cell: (i) => h("span", {}, status(i.status), i.reason ? h("small", { class: "reason", "data-reason": "" }, i.reason) : null) },
    { label: "Size", cell: (i) => (i.size ? bytes(i.size) : "—") },
    { label: "Store", cell: (i) => i.store },
    { label: "", cell: (i) => (i.owner === session.name || session.realm === "admin" ? action("Delete", async () => { await del(`/v1/images/${i.id}`); await list.reload(); }, { class: "danger", "data-confirm": `Delete image ${i.name}?` }) : "") },
  ], "No images yet.");
  const file = select("file", []);
  const name = input("name", { required: true });
  const store = select("store", [["fs", "filesystem"], ["rbd", "Ceph RBD"]]);
  const pub = h("input", { type: "checkbox", name: "public", id: "f-public" });
  const fields = [{ name: "file", label: "From file", input: file }, { name: "name", label: "Name", input: name }, { name: "store", label: "Store", input: store }];
  if (session.realm === "admin") fields.push({ name: "public", label: "Public", input: pub });
  const f = form(fields, "Create image", async () => {
    await post("/v1/images", { file: file.value, name: name.value.trim(), store: store.value, public: pub.checked });
    f.el.reset();
    await list.reload();
  });
  void get<FileInfo[]>("/v1/files").then((fs) => clear(file, ...fs.map((x) => h("option", { value: x.name }, x.name))), (e) => f.error(e));
  clear(root, h("h1", {}, "Images"), list.el, card("Make an image from a file", f.el));
  const timer = window.setInterval(() => {
    if (!root.isConnected) return clearInterval(timer);
    if (list.items().some((i) => i.status === "requested" || i.status === "deleting")) void list.reload();
  }, 3000);
}
