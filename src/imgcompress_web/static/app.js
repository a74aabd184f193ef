// imgcompress web page: plain JavaScript, no build step, no external resources.
// The Content-Security-Policy allows scripts, styles and images from this service only:
// no inline scripts or style attributes here, and the originals are links, never loaded.
"use strict";
const imgcompress = (() => {
  const REASONS = {
    invalid_url: "The address is not a valid web address.",
    blocked_destination: "The address points inside a private network, which the service does not fetch from.",
    dns_failure: "The server name could not be found.",
    connection_failed: "The image server could not be reached.",
    download_timeout: "The image server took too long to answer.",
    too_many_redirects: "The address redirected too many times.",
    source_too_large: "The image file is too large to download.",
    not_an_image: "The address does not point to an image.",
    unsupported_format: "The image is in a format the service does not handle (JPEG, PNG, WebP and GIF are).",
    image_too_large: "The image has too many pixels.",
    corrupt_image: "The image file is damaged or incomplete.",
    internal_error: "Something went wrong on our side.",
  };

  function reason(error) {
    if (!error) return "";
    if (REASONS[error.code]) return REASONS[error.code];
    const http = /^upstream_http_(\d+)$/.exec(error.code);
    if (http) return http[1] === "404" ? "The image was not found (HTTP 404)." : `The image server answered with an error (HTTP ${http[1]}).`;
    return error.message;
  }

  // With IMGCOMPRESS_API_KEYS set, the API wants a key: the page keeps it for this tab.
  function api(path, options = {}) {
    const key = sessionStorage.getItem("imgcompress-api-key");
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    return fetch(path, { ...options, headers: { ...headers, ...(options.headers || {}) } });
  }

  function size(bytes) {
    if (bytes == null) return "–";
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(2)} MB`;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value; else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child));
    return node;
  }

  function showProblem(body) {
    const message = document.getElementById("message");
    const problems = (body.problems || []).map((p) => `• ${p.row ? `row ${p.row}` : "file"}${p.column ? `, ${p.column}` : ""}: ${p.reason}`);
    const headline = problems.length ? `${body.title}:` : body.detail || body.title || "The upload failed.";
    message.textContent = [headline, ...problems].join("\n");
    message.hidden = false;
    const field = body.field && document.getElementById(`opt-${body.field}`);
    if (field) {  // a bad output option: open the Options and point at it
      document.getElementById("options").open = true;
      field.classList.add("invalid");
      field.focus();
    }
  }

  async function submit(form, file) {
    const data = new FormData();
    data.append("file", file, file.name || "products.csv");
    const hook = form.querySelector("#webhook_url").value.trim();
    if (hook) data.append("webhook_url", hook);
    for (const option of form.querySelectorAll("[data-option]")) {
      option.classList.remove("invalid");
      const value = option.value.trim();
      if (value) data.append(option.dataset.option, value);
    }
    const key = form.querySelector("#api_key").value.trim();
    if (key) sessionStorage.setItem("imgcompress-api-key", key);
    const response = await api("/api/upload", { method: "POST", body: data });
    const body = await response.json();
    if (!response.ok) return showProblem(body);
    window.location.assign(`/requests/${encodeURIComponent(body.requestId)}`);
  }

  function uploadPage() {
    const form = document.getElementById("upload");
    const input = document.getElementById("file");
    const drop = document.getElementById("drop");
    const dropText = document.getElementById("drop-text");
    document.getElementById("origin").textContent = window.location.origin;
    drop.addEventListener("click", () => input.click());
    drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
    input.addEventListener("change", () => { if (input.files[0]) dropText.textContent = input.files[0].name; });
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      if (e.dataTransfer.files[0]) { input.files = e.dataTransfer.files; dropText.textContent = input.files[0].name; }
    });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      document.getElementById("message").hidden = true;
      if (!input.files[0]) return showProblem({ detail: "Choose a CSV file first." });
      submit(form, input.files[0]);
    });
    recentRequests();
    document.getElementById("try-it").addEventListener("click", async (e) => {
      e.preventDefault();
      const text = await (await fetch("/samples/products.csv")).text();
      submit(form, new File([text], "sample-products.csv", { type: "text/csv" }));
    });
  }

  // The caller's recent requests (only theirs when API keys are on), newest first.
  async function recentRequests() {
    const response = await api("/api/requests?limit=10");
    if (!response.ok) return;  // e.g. a key is needed and none is kept yet
    const body = await response.json();
    const list = document.getElementById("recent-list");
    list.replaceChildren(...body.requests.map((r) => el("li", { class: "recent" },
      el("a", { href: `/requests/${encodeURIComponent(r.requestId)}` }, r.requestId),
      ` · ${r.status} · ${r.progress.done} done, ${r.progress.failed} failed of ${r.progress.total}`,
      el("span", { class: "muted" }, ` · ${new Date(r.createdAt).toLocaleString()}`))));
    document.getElementById("recent").hidden = body.requests.length === 0;
  }

  // A link to an API download: with a key kept, fetch it and hand the browser a blob.
  function downloadLink(link, path, name) {
    link.href = path;
    if (!sessionStorage.getItem("imgcompress-api-key")) return;
    link.addEventListener("click", async (e) => {
      e.preventDefault();
      const blob = await (await api(path)).blob();
      const url = URL.createObjectURL(blob);
      const a = el("a", { href: url, download: name });
      document.body.append(a);
      a.click();
      a.remove();
    });
  }

  // The original stays on its own server: a link the viewer may follow, never an <img>
  // that would make every viewer's browser contact that server.
  function originalLink(url) {
    let host = url;
    try { host = new URL(url).host; } catch (e) { /* keep the text as it is */ }
    return el("a", { href: url, class: "original", rel: "noopener noreferrer", target: "_blank", title: url }, host);
  }

  function renderImage(image) {
    const before = el("figure", {}, originalLink(image.inputUrl),
      el("figcaption", {}, `Original · ${size(image.inputBytes)}`));
    const afterImg = image.outputUrl
      ? el("img", { src: image.outputUrl, alt: "compressed", loading: "lazy", class: "after" })
      : el("img", { alt: "" });
    const after = el("figure", {}, afterImg, el("figcaption", {}, `Compressed · ${size(image.outputBytes)}`));
    const card = el("div", { class: `image state-${image.state}`, "data-image-id": image.imageId }, el("div", { class: "pair" }, before, after));
    if (image.state === "done") {
      const saved = image.inputBytes ? Math.round(100 * (1 - image.outputBytes / image.inputBytes)) : 0;
      card.append(el("p", { class: "small" }, el("span", { class: "saving" }, `${saved}% smaller`),
        ` · ${image.width}×${image.height} · `, el("a", { href: image.outputUrl, download: "" }, "Download")));
      const made = [image.format ? image.format.toUpperCase() : "", image.quality ? `quality ${image.quality}` : "",
        image.score != null ? `score ${image.score}` : ""].filter(Boolean).join(" · ");
      if (made) card.append(el("p", { class: "small muted made" }, made));
      if (image.note) card.append(el("p", { class: "small muted" }, image.note));
      if (image.warnings && image.warnings.length) {
        card.append(el("ul", { class: "small warnings" }, ...image.warnings.map((w) => el("li", {}, w))));
      }
    } else if (image.state === "failed") {
      card.append(el("p", { class: "small failed" }, reason(image.error)));
    } else {
      card.append(el("p", { class: "small muted" }, image.state === "working" ? "Compressing…" : (image.error ? `Waiting to retry: ${reason(image.error)}` : "Waiting…")));
    }
    return card;
  }

  function renderProgress(status) {
    const p = status.progress;
    const state = document.getElementById("status");
    state.textContent = status.status;
    state.className = `status ${status.status}`;
    document.getElementById("counts").textContent = `${p.done} done · ${p.failed} failed · ${p.total} images`;
    const bar = document.getElementById("bar");
    bar.firstElementChild.style.width = `${p.percent}%`;
    bar.setAttribute("aria-valuenow", String(p.percent));
    bar.dataset.percent = String(p.percent);
  }

  function render(status) {
    renderProgress(status);
    let input = 0, output = 0;
    const products = document.getElementById("products");
    products.replaceChildren();
    for (const product of status.products) {
      const images = el("div", { class: "images" });
      for (const image of product.images) {
        images.append(renderImage(image));
        if (image.state === "done") { input += image.inputBytes; output += image.outputBytes; }
      }
      products.append(el("div", { class: "product" }, el("h2", {}, `${product.serial}. ${product.name}`), images));
    }
    if (input) {
      document.getElementById("totals").textContent = `${size(input)} → ${size(output)}: ${Math.round(100 * (1 - output / input))}% saved on the finished images`;
    }
  }

  async function requestPage() {
    const requestId = decodeURIComponent(window.location.pathname.split("/").pop());
    document.getElementById("request-id").textContent = requestId;
    const base = `/api/requests/${encodeURIComponent(requestId)}`;
    downloadLink(document.getElementById("csv-link"), `${base}/output.csv`, `${requestId}-output.csv`);
    downloadLink(document.getElementById("zip-link"), `${base}/images.zip`, `${requestId}-images.zip`);
    const retry = document.getElementById("retry");
    retry.addEventListener("click", async () => {
      retry.hidden = true;
      const response = await api(`${base}/retry`, { method: "POST" });
      if (!response.ok) return showProblem(await response.json());
      poll(requestId);
    });
    poll(requestId);
  }

  async function poll(requestId) {
    // Progress every second from the summary; every image's detail (a large document for a
    // large request) every second for small requests, every 10 s for large ones, and at the end.
    const statusPath = `/api/status/${encodeURIComponent(requestId)}`;
    let detailAt = 0;
    for (;;) {
      const response = await api(`${statusPath}?products=false`);
      const summary = await response.json();
      if (!response.ok) return showProblem(summary);
      renderProgress(summary);
      const final = summary.status !== "Pending";
      const every = summary.progress.total <= 200 ? 1000 : 10000;
      if (final || Date.now() - detailAt >= every) {
        const detail = await api(`${statusPath}?limit=200`);
        const body = await detail.json();
        if (!detail.ok) return showProblem(body);
        // The API pages products (200 at a time): follow the pages, up to 2,000 products.
        for (let cursor = body.nextCursor; cursor != null && body.products.length < 2000;) {
          const next = await (await api(`${statusPath}?limit=200&cursor=${cursor}`)).json();
          body.products.push(...(next.products || []));
          cursor = next.nextCursor;
        }
        render(body);
        detailAt = Date.now();
        if (body.status !== "Pending") {
          document.getElementById("retry").hidden = body.progress.failed === 0;
          break;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  const pages = { upload: uploadPage, request: requestPage };
  const page = pages[document.body.dataset.page];
  if (page) page();
  return { uploadPage, requestPage };
})();
