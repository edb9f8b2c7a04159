declare module "@novnc/novnc" {
  export default class RFB extends EventTarget {
    constructor(target: HTMLElement, url: string, options?: { wsProtocols?: string[]; credentials?: Record<string, string> });
    scaleViewport: boolean;
    disconnect(): void;
  }
}
