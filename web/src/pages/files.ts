import { ApiError, del, upload } from "../api";
import { bytes, clear, h, when } from "../dom";
import { action, form, input } from "../forms";
import type { FileInfo } from "../types";
import { card, listing } from "./common";

export function files(root: HTMLElement): void {
  const list = listing<FileInfo>("files", "/v1/files", [
    { label: "Name", cell: (f) => f.name },
    { label: "Size", cell: (f) => bytes(f.size) },
    { label: "Uploaded", cell: (f) => when(f.uploaded_at) },
    { label: "", cell: (f) => action("Delete", async () => { await del(`/v1/files/${encodeURIComponent(f.name)}`); await list.reload(); }, { class: "danger", "data-confirm": `Delete file ${f.name}?` }) },
  ], "No files yet.");
  const chooser = input("body", { type: "file", required: true });
  const name = input("name", { placeholder: "the file's own name" });
  const bar = h("progress", { max: 1, value: 0, id: "upload-progress", hidden: true });
  const label = h("span", { class: "muted" });
  const f = form([{ name: "body", label: "File", input: chooser }, { name: "name", label: "Name", input: name }], "Upload", async () => {
    const file = chooser.files?.[0];
    if (!file) throw new ApiError(400, "choose a file", "body");
    bar.hidden = false;
    try {
      await upload(name.value.trim() || file.name, file, (done, total) => {
        bar.value = total ? done / total : 0;
        label.textContent = `${bytes(done)} of ${bytes(total)}`;
      });
      f.el.reset();
      label.textContent = "uploaded";
      await list.reload();
    } finally {
      bar.hidden = true;
    }
  }, [h("div", { class: "progress" }, bar, label)]);
  clear(root, h("h1", {}, "Files"), list.el, card("Upload a file", f.el));
}
