/** Sign-in: the token form, and the top bar's "signed in as" and "Sign out". */

import { byId, show } from "../dom.js";
import type { TokenClaims } from "../session.js";

export interface SignInHandlers {
  /** The user pasted something; returns false when it is not a token (the form then stays). */
  onSignIn(pasted: string): boolean;
  onSignOut(): void;
}

export class SignInView {
  private readonly panel = byId("sign-in");
  private readonly form = byId<HTMLFormElement>("sign-in-form");
  private readonly tokenInput = byId<HTMLTextAreaElement>("token-input");
  private readonly signedInAs = byId("signed-in-as");
  private readonly signOut = byId<HTMLButtonElement>("sign-out");
  private readonly home = byId("home");

  constructor(handlers: SignInHandlers) {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (handlers.onSignIn(this.tokenInput.value)) {
        this.tokenInput.value = "";
      }
    });
    this.signOut.addEventListener("click", () => handlers.onSignOut());
  }

  /** Shows the sign-in form, or the home screen for the signed-in user. */
  render(claims: TokenClaims | undefined): void {
    show(this.panel, !claims);
    show(this.home, !!claims);
    show(this.signOut, !!claims);
    show(this.signedInAs, !!claims);
    this.signedInAs.textContent = claims ? `signed in as ${claims.sub}` : "";
    document.body.dataset.signedIn = claims ? "true" : "false";
  }
}
