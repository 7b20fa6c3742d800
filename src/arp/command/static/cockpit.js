// ARP console, issue 16: attachments on the prompt forms, and a run's "Changes" tab.
//
// Kept apart from console.js so both can change without treading on each other; console.js
// hands in its DOM and API helpers (`cockpit({ h, api, enc, report })`). As there, nothing is
// built from HTML strings, and images are shown from data: URLs (the CSP allows no blob:).

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const ACCEPT = [
  ...IMAGE_TYPES,
  "text/*",
  ".txt,.md,.log,.json,.csv,.tsv,.yaml,.yml,.toml,.ini,.xml,.html,.css,.js,.ts,.tsx,.jsx",
  ".py,.rb,.go,.rs,.java,.kt,.c,.h,.cpp,.hpp,.cs,.sh,.sql,.diff,.patch",
].join(",");
// The server's bounds (arp.config AttachmentBounds) are the ones that count; these only spare a
// phone an upload that would come back 413.
const MAX_FILES = 10;
const MAX_BYTES = 20 * 1024 * 1024;

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error || new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10240 ? 1 : 0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export function cockpit({ h, api, enc, report }) {
  /** Attach images (camera roll) and text files to a prompt: thumbnails, remove before send. */
  class AttachPicker {
    constructor(id) {
      this.items = []; // {file, dataUrl}
      this.input = h("input", {
        type: "file",
        id: `${id}-input`,
        class: "attach-input",
        multiple: true,
        accept: ACCEPT,
        "aria-label": "Attach images or files",
      });
      this.button = h(
        "label",
        { class: "btn small attach-btn", for: `${id}-input`, title: "Attach images or text files" },
        h("span", { "aria-hidden": "true", class: "attach-plus", text: "+" }),
        h("span", { text: "Attach" }),
      );
      this.list = h("ul", { class: "attach-list", id, "aria-label": "Attachments", hidden: true });
      this.note = h("p", { class: "attach-note", role: "alert", hidden: true });
      this.element = h("div", { class: "attach" }, this.input, this.button, this.list, this.note);
      this.input.addEventListener("change", () => this.add([...this.input.files]));
    }

    async add(files) {
      this.note.hidden = true;
      for (const file of files) {
        if (this.items.length >= MAX_FILES) {
          this.warn(`At most ${MAX_FILES} attachments go with one prompt.`);
          break;
        }
        const total = this.items.reduce((sum, item) => sum + item.file.size, 0) + file.size;
        if (total > MAX_BYTES) {
          this.warn(`Attachments may hold ${sizeText(MAX_BYTES)} together; ${file.name} is left out.`);
          continue;
        }
        try {
          this.items.push({ file, dataUrl: await readAsDataUrl(file) });
        } catch (err) {
          this.warn(err.message || String(err));
        }
      }
      this.input.value = "";
      this.render();
    }

    warn(text) {
      this.note.textContent = text;
      this.note.hidden = false;
    }

    render() {
      this.list.replaceChildren(
        ...this.items.map((item, index) => {
          const image = IMAGE_TYPES.includes(item.file.type);
          const remove = h("button", {
            type: "button",
            class: "attach-remove",
            "aria-label": `Remove ${item.file.name}`,
            title: "Remove",
            text: "×",
          });
          remove.addEventListener("click", () => {
            this.items.splice(index, 1);
            this.render();
          });
          return h(
            "li",
            { class: "attach-item" },
            image
              ? h("img", { class: "thumb", src: item.dataUrl, alt: item.file.name })
              : h("span", { class: "thumb file-thumb", "aria-hidden": "true", text: "TXT" }),
            h("span", { class: "attach-name", text: item.file.name }),
            h("span", { class: "attach-size", text: sizeText(item.file.size) }),
            remove,
          );
        }),
      );
      this.list.hidden = this.items.length === 0;
    }

    /** The attachments as the API's JSON takes them: [{name, content_type, data}] (base64). */
    toJson() {
      return this.items.map(({ file, dataUrl }) => ({
        name: file.name,
        content_type: file.type || "text/plain",
        data: dataUrl.slice(dataUrl.indexOf(",") + 1),
      }));
    }

    get count() {
      return this.items.length;
    }

    clear() {
      this.items = [];
      this.render();
    }
  }

  /** The attachments a prompt event lists, as thumbnails (images) and chips (files). */
  function attachmentThumbs(sessionId, attachments) {
    if (!Array.isArray(attachments) || !attachments.length) return null;
    return h(
      "ul",
      { class: "attach-list sent", "aria-label": "Attached" },
      attachments.map((item) => {
        const url = `/api/sessions/${enc(sessionId)}/attachments/${enc(item.id)}`;
        const image = item.kind === "image";
        return h(
          "li",
          { class: "attach-item" },
          h(
            "a",
            { href: url, target: "_blank", rel: "noopener", title: `${item.name} (${sizeText(item.size)})` },
            image
              ? h("img", { class: "thumb", src: url, alt: item.name, loading: "lazy" })
              : h("span", { class: "thumb file-thumb", "aria-hidden": "true", text: "TXT" }),
          ),
          h("span", { class: "attach-name", text: item.name }),
        );
      }),
    );
  }

  const STATUS_MARK = { added: "A", modified: "M", deleted: "D", renamed: "R" };

  // The file header (diff --git, index, ---/+++) says again what the row above says: left out,
  // but for what it tells beyond that (a new or deleted file, a mode change, a rename).
  const HEADER = /^(diff --git |index |--- |\+\+\+ )/;

  function diffLines(text) {
    let inHeader = true;
    const lines = [];
    for (const line of text.split("\n")) {
      if (line.startsWith("@@")) inHeader = false;
      if (inHeader && HEADER.test(line)) continue;
      let cls = "ctx";
      if (inHeader) cls = "meta";
      else if (line.startsWith("@@")) cls = "hunk";
      else if (line.startsWith("+")) cls = "add";
      else if (line.startsWith("-")) cls = "del";
      else if (line.startsWith("[diff cut by arp")) cls = "cut";
      else if (line.startsWith("\\ ")) cls = "meta";
      lines.push(h("div", { class: `dl ${cls}`, text: line || " " }));
    }
    return h("div", { class: "diff", role: "region", "aria-label": "Diff" }, lines);
  }

  /** A run's "Changes" tab: what the session changed, file by file, with readable diffs. */
  class ChangesPanel {
    constructor(sessionId) {
      this.id = sessionId;
      this.summary = h("p", { class: "hint", id: "changes-summary", text: "Not loaded yet." });
      this.refreshButton = h("button", { class: "btn small", type: "button", text: "Refresh" });
      this.files = h("ul", { class: "changes", id: "changes-files", "aria-label": "Changed files" });
      this.error = h("p", { class: "form-error", role: "alert", hidden: true });
      this.element = h(
        "section",
        { class: "changes-panel", id: "changes", "aria-label": "Changes" },
        h("div", { class: "changes-head" }, this.summary, this.refreshButton),
        this.error,
        this.files,
      );
      this.refreshButton.addEventListener("click", () => this.refresh());
      this.loading = null;
    }

    async refresh() {
      if (this.loading) return this.loading;
      this.loading = this.load().finally(() => {
        this.loading = null;
      });
      return this.loading;
    }

    async load() {
      this.error.hidden = true;
      this.refreshButton.disabled = true;
      try {
        const data = await api(`/api/sessions/${enc(this.id)}/changes`);
        this.show(data);
      } catch (err) {
        report(err, this.error);
      } finally {
        this.refreshButton.disabled = false;
      }
    }

    show(data) {
      const files = data.files || [];
      const base = data.base;
      let where = "";
      if (base && base.kind === "git" && base.commit) where = ` since the first run (on ${base.commit.slice(0, 8)})`;
      else if (base) where = " since the first run started";
      this.summary.textContent = data.note
        ? data.note
        : files.length
          ? `${files.length} file${files.length === 1 ? "" : "s"} changed${where}` +
            (data.truncated ? ` (${data.truncated} more not listed)` : "")
          : `No changes${where}.`;
      this.files.replaceChildren(...files.map((file) => this.fileItem(file)));
    }

    fileItem(file) {
      const mark = STATUS_MARK[file.status] || "?";
      const counts = h(
        "span",
        { class: "counts" },
        h("span", { class: "plus", text: `+${file.additions}` }),
        h("span", { class: "minus", text: `−${file.deletions}` }),
      );
      const summary = h(
        "summary",
        {},
        h("span", { class: `change-mark ${file.status}`, title: file.status, text: mark }),
        h("span", { class: "change-path", text: file.old_path ? `${file.old_path} → ${file.path}` : file.path }),
        counts,
      );
      const body = h("div", { class: "change-body" });
      if (file.binary) body.append(h("p", { class: "hint", text: "Binary file: no diff shown." }));
      else if (file.diff) {
        body.append(diffLines(file.diff.replace(/\n$/, "")));
        if (file.diff.includes("[diff cut by arp")) {
          const more = h("button", { class: "btn small", type: "button", text: "Show the whole diff" });
          more.addEventListener("click", async () => {
            more.disabled = true;
            try {
              const one = await api(`/api/sessions/${enc(this.id)}/changes?path=${enc(file.path)}`);
              const whole = one.files && one.files[0];
              if (whole && whole.diff) body.replaceChildren(diffLines(whole.diff.replace(/\n$/, "")));
            } catch (err) {
              report(err, this.error);
              more.disabled = false;
            }
          });
          body.append(more);
        }
      }
      return h("li", { class: "change" }, h("details", { open: true }, summary, body));
    }
  }

  return { AttachPicker, attachmentThumbs, ChangesPanel };
}
