export interface Resources {
  cpu: number;
  ram_mib: number;
  ssd_mib: number;
  hdd_mib: number;
}
export interface Nic {
  network: string;
  mac: string;
  address: string;
}
export interface Vm {
  id: string;
  owner: string;
  name: string;
  spec: Resources;
  image: string;
  status: string;
  nics: Nic[];
  keys: string[];
  host: string;
  reason: string;
  order: string;
  created_at?: string;
  updated_at?: string;
}
export interface Net {
  id: string;
  owner: string;
  name: string;
  ipam: string;
  status: string;
  vni: number;
  prefix: string;
  reason: string;
}
export interface Image {
  id: string;
  owner: string;
  name: string;
  file: string;
  store: string;
  public: boolean;
  status: string;
  size: number;
  reason: string;
}
export interface FileInfo {
  id: string;
  owner: string;
  name: string;
  size: number;
  sha256?: string;
  uploaded_at?: string;
}
export interface Key {
  id: string;
  name: string;
  public_key: string;
}
export interface Host {
  id: string;
  capacity: Resources;
  used: Resources;
  vms: string[];
  address: string;
  router: boolean;
  drained: boolean;
  state: string;
}
export interface User {
  name: string;
  realm: string;
  keys: Key[];
  created_at?: string;
}
export interface OrderLine {
  item: string;
  quantity: string;
  unit_price: string;
  per_minute: string;
}
export interface Order {
  id: string;
  owner: string;
  vm: string;
  spec: Resources;
  currency: string;
  lines: OrderLine[];
  per_minute: string;
  image: string;
  placed_at?: string;
}
export interface Quote {
  currency: string;
  per_minute: string;
  per_30_days: string;
  lines: OrderLine[];
}
export interface AuditLine {
  seq: number;
  at: string;
  actor: string;
  type: string;
  summary: string;
}
