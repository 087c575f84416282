/** The page-wide error banner under the top bar. */

import { byId, show } from "../dom.js";

export class ErrorBanner {
  private readonly element = byId("error-banner");

  /** Shows `message`; undefined (or empty) hides the banner. */
  show(message: string | undefined): void {
    this.element.textContent = message ?? "";
    show(this.element, !!message);
  }

  clear(): void {
    this.show(undefined);
  }
}
