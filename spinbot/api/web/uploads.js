// A file field that uploads as soon as a file is chosen (POST /v1/uploads), previews it, and shows the API's
// verdict next to it: the server judges the file by its content, so its error is the one to show. A file over the
// server's byte limit is refused here, with the server's message, rather than sent to be refused after the wait.

import { api } from "./api.js";
import { clearError, showError } from "./dom.js";

export class UploadField {
  /** kind: "portrait" or "voice"; key: the field ("image", "voice", "narrator_voice") whose errors it shows;
   * optional: no file is no error (id() gives null); remove: the button that takes the chosen file back. */
  constructor(form, { kind, key, input, preview, optional = false, remove = null }) {
    Object.assign(this, { form, kind, key, input, preview, optional, remove });
    this.state = form.querySelector(`.upload-state[data-state-for="${key}"]`);
    this.upload = null; // the promise of the chosen file's upload id
    this.kept = null; // an upload id kept from a past job (no file chosen here): sent as it is
    this.maxBytes = null; // the server's SPINBOT_MAX_UPLOAD_BYTES, once the form's data has loaded
    this.tooLargeMessage = "";
    input.addEventListener("change", () => this.choose());
    remove?.addEventListener("click", () => this.clear());
    preview.addEventListener("error", () => (preview.hidden = true));
    preview.addEventListener(preview.tagName === "IMG" ? "load" : "loadedmetadata", () => (preview.hidden = false));
  }

  /** The server's byte limit and its one-line message for a file over it (GET /v1/params/form's `limits`). */
  setLimit(maxBytes, message) {
    Object.assign(this, { maxBytes: maxBytes ?? null, tooLargeMessage: message || "" });
  }

  /** The server's message when the chosen file is over its limit, or null. */
  tooLarge() {
    return this.file && this.maxBytes !== null && this.file.size > this.maxBytes ? this.tooLargeMessage : null;
  }

  get file() {
    return this.input.files[0];
  }

  choose() {
    clearError(this.form, this.key);
    this.kept = null;
    if (this.remove) this.remove.hidden = !this.file;
    if (!this.file) this.state.textContent = "";
    this.showPreview();
    if (this.tooLarge()) {
      this.state.textContent = "";
      showError(this.form, this.key, this.tooLarge());
      this.upload = null; // missing() keeps refusing it: nothing is sent
      return;
    }
    this.upload = this.file ? this.send(this.file) : null;
    this.upload?.catch(() => {}); // shown next to the field already; id() tries again
  }

  showPreview() {
    if (this.preview.src) URL.revokeObjectURL(this.preview.src);
    this.preview.hidden = true;
    if (this.file) this.preview.src = URL.createObjectURL(this.file);
    else this.preview.removeAttribute("src");
  }

  async send(file) {
    this.state.textContent = `uploading ${file.name}…`;
    try {
      const { id } = await api.upload(this.kind, file);
      this.state.textContent = `uploaded ${file.name}`;
      return id;
    } catch (err) {
      this.state.textContent = "";
      this.preview.hidden = true;
      showError(this.form, this.key, err.message);
      throw err;
    }
  }

  /** Choose a file fetched from elsewhere (a past job's input) as if the user had picked it. */
  async reuse(fetchFile) {
    clearError(this.form, this.key);
    this.state.textContent = `fetching the ${this.kind} of that job…`;
    try {
      const file = await fetchFile();
      const chosen = new DataTransfer();
      chosen.items.add(file);
      this.input.files = chosen.files;
      this.choose();
    } catch (err) {
      this.state.textContent = "";
      showError(this.form, this.key, `cannot reuse the ${this.kind}: ${err.message}; choose the file again`);
    }
  }

  /** No file, and no upload kept: the field as the page first shows it. */
  clear() {
    this.input.value = "";
    this.choose();
  }

  /** Keep an upload id a past job names (the upload is kept while a job names it), as if its file were chosen. */
  keep(id, note) {
    this.clear();
    if (!id) return;
    this.kept = id;
    this.upload = Promise.resolve(id);
    this.state.textContent = note;
    if (this.remove) this.remove.hidden = false;
  }

  /** Why the job cannot have this field yet (a required file not chosen, or one over the limit), or null. */
  missing() {
    if (this.tooLarge()) return this.tooLarge();
    return this.optional || this.kept || this.file ? null : `choose a ${this.kind} file`;
  }

  /** The upload id for the job; uploads again when the last try failed (a key may have been given since). */
  async id() {
    if (this.kept) return this.kept;
    if (!this.file && this.optional) return null;
    const missing = this.missing();
    if (missing) {
      showError(this.form, this.key, missing);
      throw new Error(missing);
    }
    try {
      return await this.upload;
    } catch {
      clearError(this.form, this.key);
      this.upload = this.send(this.file);
      return await this.upload;
    }
  }
}
