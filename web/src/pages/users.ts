import QRCode from "qrcode";
import { post } from "../api";
import { clear, h, when } from "../dom";
import { form, input, select } from "../forms";
import type { User } from "../types";
import { card, listing } from "./common";

export function users(root: HTMLElement): void {
  const list = listing<User>("users", "/v1/users", [
    { label: "Name", cell: (u) => u.name },
    { label: "Realm", cell: (u) => u.realm },
    { label: "SSH keys", cell: (u) => String(u.keys.length) },
    { label: "Created", cell: (u) => when(u.created_at) },
  ], "No users.");
  const name = input("name", { required: true });
  const realm = select("realm", [["users", "users"], ["admin", "admin"]]);
  const secret = h("div", { id: "new-user-secret" });
  const f = form([{ name: "name", label: "Name", input: name }, { name: "realm", label: "Realm", input: realm }], "Add user", async () => {
    const answer = await post<{ name: string; realm: string; otpauth_uri: string }>("/v1/users", { name: name.value.trim(), realm: realm.value });
    f.el.reset();
    const img = h("img", { alt: "TOTP QR code", class: "qr", id: "totp-qr" });
    img.src = await QRCode.toDataURL(answer.otpauth_uri, { margin: 1, width: 220 });
    const seed = new URL(answer.otpauth_uri).searchParams.get("secret") ?? "";
    clear(secret, h("div", { class: "secret card" },
      h("h3", {}, `${answer.name}@${answer.realm}: the TOTP secret, shown once`),
      img, h("p", {}, "Secret: ", h("code", { id: "totp-secret" }, seed)),
      h("p", { class: "muted" }, "Scan it with an authenticator app now: it is not shown again."),
      h("button", { type: "button", onclick: () => clear(secret) }, "Done")));
    await list.reload();
  });
  clear(root, h("h1", {}, "Users"), list.el, card("Add a user", f.el, secret));
}
