// A live character count under each long text box, against the limit the server holds it to (GET /v1/params/form's
// `limits`). The boxes have no maxlength: a browser cut pasted text to it without a word, so a text over its limit is
// kept whole, its count says by how much, and the server's one-line error shows under the field on submit.

/** Characters as the server counts them (Python's len: code points, where JS's length counts UTF-16 units). */
export function charCount(text) {
  return [...text].length;
}

export class CharCounts {
  /** boxes: {limit name in `limits` (e.g. "prompt_chars"): textarea}; each gets a <p class="char-count"> after it. */
  constructor(boxes) {
    this.boxes = Object.entries(boxes).map(([limit, box]) => ({ limit, box, count: countFor(box) }));
    this.limits = {};
    for (const { box } of this.boxes) box.addEventListener("input", () => this.refresh());
  }

  setLimits(limits) {
    this.limits = limits || {};
    this.refresh();
  }

  /** Count every box again (after one was filled by code, which fires no input event). */
  refresh() {
    for (const { limit, box, count } of this.boxes) show(count, charCount(box.value), this.limits[limit]);
  }
}

function countFor(box) {
  const count = document.createElement("p");
  count.className = "char-count muted";
  count.id = `${box.id}-count`;
  count.setAttribute("aria-live", "polite");
  box.after(count);
  const described = box.getAttribute("aria-describedby");
  box.setAttribute("aria-describedby", described ? `${described} ${count.id}` : count.id);
  return count;
}

function show(count, chars, limit) {
  const over = limit !== undefined && chars > limit;
  count.classList.toggle("over", over);
  if (limit === undefined) count.textContent = chars ? `${chars.toLocaleString("en")} characters` : "";
  else if (over) {
    count.textContent = `${chars.toLocaleString("en")} / ${limit.toLocaleString("en")} characters: `
      + `${(chars - limit).toLocaleString("en")} over the limit, shorten it to send the job`;
  } else count.textContent = `${chars.toLocaleString("en")} / ${limit.toLocaleString("en")} characters`;
}
