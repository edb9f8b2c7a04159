// The VMs the user sees, kept current by the gateway's stream (/v1/stream/vms): a snapshot,
// then one event per change. Pages subscribe and redraw; nothing polls.

import { stream, type StreamHandle } from "./api";
import type { Vm } from "./types";

type Listener = () => void;

export const vms = new Map<string, Vm>();
const listeners = new Set<Listener>();
let handle: StreamHandle | null = null;
export let live = false;
export let loaded = false;

function changed(): void {
  for (const l of listeners) l();
}

export function subscribe(l: Listener): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

export function open(onExpired: () => void): void {
  close();
  handle = stream(
    "/v1/stream/vms",
    (name, data) => {
      if (name === "snapshot") {
        vms.clear();
        for (const vm of JSON.parse(data) as Vm[]) vms.set(vm.id, vm);
        loaded = true;
      } else if (name === "vm") {
        const vm = JSON.parse(data) as Vm;
        vms.set(vm.id, vm);
      } else if (name === "vm_deleted") {
        vms.delete((JSON.parse(data) as { id: string }).id);
      } else if (name === "expired") {
        onExpired();
        return;
      }
      changed();
    },
    (on) => {
      live = on;
      changed();
    },
  );
}

export function close(): void {
  handle?.close();
  handle = null;
  vms.clear();
  loaded = false;
  live = false;
}

/** Put an answer of the API (a VM just created or changed) in before its event arrives. */
export function put(vm: Vm): void {
  vms.set(vm.id, vm);
  changed();
}
