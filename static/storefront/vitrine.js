/*
 * Vitrine storefront widgets: one script tag, framework-free web components.
 *
 *   <script src="https://vitrine.example/embed/v1/vitrine.js" data-key="pk_..."
 *           data-consent="pending" async></script>
 *   <vitrine-similar sku="SKU-1"></vitrine-similar>
 *   <vitrine-complete-the-look sku="SKU-1"></vitrine-complete-the-look>
 *   <vitrine-often-bought-together sku="SKU-1"></vitrine-often-bought-together>
 *   <vitrine-photo-search></vitrine-photo-search>
 *   <vitrine-search-results param="q"></vitrine-search-results>
 *   <vitrine-posts sku="SKU-1"></vitrine-posts>   (published posts tagging the product:
 *                                                  "Seen in"; without sku: the latest posts)
 *
 * Theming: CSS custom properties inherit into the widgets' shadow roots, e.g.
 *   vitrine-similar { --vitrine-accent: #b00; --vitrine-font: Georgia, serif; }
 * (--vitrine-font, --vitrine-text, --vitrine-muted, --vitrine-accent, --vitrine-bg,
 *  --vitrine-card-bg, --vitrine-radius, --vitrine-gap, --vitrine-card-min).
 *
 * Events (impression, click, add_to_cart; search) are sent only after consent:
 *   Vitrine.consent(true)  — the site's consent banner calls it (or data-consent="granted").
 *   Vitrine.track("add_to_cart", {sku: "SKU-1"}) — the page's own cart button.
 * No cookie, no personal data: a random session id in localStorage, made after consent.
 */
(() => {
  "use strict";
  if (window.Vitrine && window.Vitrine.version) return; // loaded twice: keep the first

  const script = document.currentScript;
  const config = {
    key: (script && script.dataset.key) || "",
    api: (script && (script.dataset.api || new URL(script.src).origin)) || "",
    consent: (script && script.dataset.consent) === "granted",
  };
  const SESSION_KEY = "vitrine.session";
  const ATTRIBUTION_KEY = "vitrine.attribution";
  const SESSION_IDLE_MS = 30 * 60 * 1000;
  const FLUSH_MS = 2000;
  const FLUSH_AT = 20;
  const QUEUE_MAX = 1000;

  // --- Session (only with consent) -----------------------------------------------------
  function randomId() {
    const bytes = new Uint8Array(18);
    crypto.getRandomValues(bytes);
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
  }

  function sessionId() {
    if (!config.consent) return "";
    try {
      const now = Date.now();
      const stored = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
      const id = stored && now - stored.seen < SESSION_IDLE_MS ? stored.id : randomId();
      localStorage.setItem(SESSION_KEY, JSON.stringify({ id, seen: now }));
      return id;
    } catch (_) {
      // Storage blocked: one id for this page view, kept in memory only.
      config.memorySession = config.memorySession || randomId();
      return config.memorySession;
    }
  }

  // --- Events: batched, sent with keepalive / sendBeacon, retried after a 429 -------------
  let queue = [];
  let timer = null;
  let retryAt = 0;

  function eventsUrl() {
    return `${config.api}/api/v1/events/?key=${encodeURIComponent(config.key)}`;
  }

  function enqueue(event) {
    if (!config.consent || !config.key) return; // no consent, no event
    queue.push(event);
    if (queue.length > QUEUE_MAX) queue = queue.slice(-QUEUE_MAX);
    if (queue.length >= FLUSH_AT) flush();
    else if (!timer) timer = setTimeout(flush, FLUSH_MS);
  }

  function flush(leaving) {
    clearTimeout(timer);
    timer = null;
    if (!queue.length || !config.consent) return Promise.resolve();
    if (!leaving && Date.now() < retryAt) {
      timer = setTimeout(flush, retryAt - Date.now());
      return Promise.resolve();
    }
    const events = queue.splice(0, 500);
    // text/plain: a "simple" cross-origin request, no preflight; sendBeacon sends only that.
    const body = JSON.stringify({ session_id: sessionId(), consent: true, events });
    if (leaving && navigator.sendBeacon) {
      navigator.sendBeacon(eventsUrl(), new Blob([body], { type: "text/plain" }));
      return Promise.resolve();
    }
    return fetch(eventsUrl(), {
      method: "POST",
      body,
      headers: { "Content-Type": "text/plain" },
      keepalive: true,
      credentials: "omit",
    })
      .then((reply) => {
        if (reply.status === 429 || reply.status >= 500) {
          const wait = Number(reply.headers.get("Retry-After")) || 2;
          retryAt = Date.now() + wait * 1000;
          queue = events.concat(queue); // not stored: send again, in order
          timer = setTimeout(flush, wait * 1000);
        }
      })
      .catch(() => {
        queue = events.concat(queue);
        retryAt = Date.now() + 5000;
        timer = setTimeout(flush, 5000);
      });
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") flush(true);
  });

  function attribution(sku, value) {
    try {
      const map = JSON.parse(sessionStorage.getItem(ATTRIBUTION_KEY) || "{}");
      if (value === undefined) return map[sku];
      map[sku] = value;
      sessionStorage.setItem(ATTRIBUTION_KEY, JSON.stringify(map));
    } catch (_) {
      return undefined;
    }
    return value;
  }

  // --- API calls ---------------------------------------------------------------------------
  function apiUrl(path, params) {
    const url = new URL(`${config.api}/api/v1/${path}`);
    url.searchParams.set("key", config.key);
    const session = sessionId();
    if (session) url.searchParams.set("session", session);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    return url.toString();
  }

  async function apiJson(url, options) {
    const reply = await fetch(url, { credentials: "omit", ...(options || {}) });
    let body = null;
    try {
      body = await reply.json();
    } catch (_) {
      body = null;
    }
    if (!reply.ok) {
      const message = body && body.error ? body.error.message : `HTTP ${reply.status}`;
      const error = new Error(message);
      error.status = reply.status;
      throw error;
    }
    return body;
  }

  // --- Rendering ---------------------------------------------------------------------------
  const STYLE = `
    :host { display: block; font-family: var(--vitrine-font, system-ui, sans-serif);
      color: var(--vitrine-text, #1d1d1f); background: var(--vitrine-bg, transparent); }
    :host([hidden]) { display: none; }
    h2 { font-size: 1.15rem; margin: 0 0 .75rem; }
    h3 { font-size: .95rem; margin: 1rem 0 .5rem; color: var(--vitrine-muted, #5f6368); }
    ul { list-style: none; margin: 0; padding: 0; display: grid; gap: var(--vitrine-gap, 1rem);
      grid-template-columns: repeat(auto-fill, minmax(var(--vitrine-card-min, 150px), 1fr)); }
    a.card { display: block; color: inherit; text-decoration: none;
      background: var(--vitrine-card-bg, #fff); border-radius: var(--vitrine-radius, 10px);
      overflow: hidden; outline-offset: 2px; }
    a.card:focus-visible { outline: 3px solid var(--vitrine-accent, #0b57d0); }
    a.card:hover .title { text-decoration: underline; }
    .photo { aspect-ratio: 3 / 4; background: #eee; display: block; width: 100%;
      height: auto; object-fit: cover; }
    .meta { padding: .5rem .6rem .7rem; font-size: .875rem; line-height: 1.3; }
    .price { color: var(--vitrine-muted, #5f6368); margin-top: .2rem; }
    .skeleton { aspect-ratio: 3 / 4; border-radius: var(--vitrine-radius, 10px);
      background: linear-gradient(90deg, #eee, #f6f6f6, #eee); background-size: 200% 100%;
      animation: shimmer 1.2s infinite; }
    @keyframes shimmer { to { background-position: -200% 0; } }
    @media (prefers-reduced-motion: reduce) { .skeleton { animation: none; } }
    button { font: inherit; cursor: pointer; border-radius: var(--vitrine-radius, 10px);
      border: 1px solid var(--vitrine-accent, #0b57d0); padding: .55rem 1rem;
      background: var(--vitrine-accent, #0b57d0); color: #fff; }
    button.secondary { background: transparent; color: var(--vitrine-accent, #0b57d0); }
    button:focus-visible { outline: 3px solid var(--vitrine-text, #1d1d1f); outline-offset: 2px; }
    dialog { border: none; border-radius: var(--vitrine-radius, 10px); padding: 1.25rem;
      width: min(56rem, 94vw); max-height: 90vh; overflow: auto; background: var(--vitrine-card-bg, #fff);
      color: var(--vitrine-text, #1d1d1f); }
    dialog::backdrop { background: rgba(0, 0, 0, .45); }
    .drop { border: 2px dashed var(--vitrine-muted, #5f6368); border-radius: var(--vitrine-radius, 10px);
      padding: 1.25rem; text-align: center; margin: .75rem 0; }
    .drop.over { border-color: var(--vitrine-accent, #0b57d0); }
    .preview { max-height: 12rem; max-width: 100%; display: block; margin: .5rem auto; }
    .row { display: flex; gap: .5rem; justify-content: flex-end; flex-wrap: wrap; }
    .status { min-height: 1.4em; margin: .5rem 0; }
    .status.error { color: #b3261e; }
    .visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden;
      clip: rect(0 0 0 0); white-space: nowrap; }
    button.post-thumb { display: block; width: 100%; padding: 0; border: none; background: none;
      color: inherit; text-align: left; }
    .post-thumb img { aspect-ratio: 1; width: 100%; height: auto; object-fit: cover; display: block;
      border-radius: var(--vitrine-radius, 10px); background: #eee; }
    .post-thumb span { display: block; font-size: .875rem; margin-top: .3rem;
      color: var(--vitrine-muted, #5f6368); }
    .post { position: relative; margin: 0 auto .75rem; max-width: 32rem; }
    .post img { display: block; width: 100%; height: auto; border-radius: var(--vitrine-radius, 10px); }
    .spot { position: absolute; transform: translate(-50%, -50%); width: 3rem; height: 3rem;
      padding: 0; border-radius: 50%; border: 3px solid #fff; box-shadow: 0 1px 4px rgba(0, 0, 0, .5);
      font-weight: 600; }
    .spot[aria-pressed="true"] { background: var(--vitrine-text, #1d1d1f); }
  `;

  // One constructed stylesheet shared by every widget's shadow root. Unlike a <style>
  // element or a style attribute, it is not refused by a brand page whose
  // Content-Security-Policy has no 'unsafe-inline' for styles.
  let sheet = null;
  function styled(root) {
    if ("adoptedStyleSheets" in root && typeof CSSStyleSheet.prototype.replaceSync === "function") {
      if (!sheet) {
        sheet = new CSSStyleSheet();
        sheet.replaceSync(STYLE);
      }
      root.adoptedStyleSheets = [sheet];
    } else {
      root.append(element("style", { text: STYLE }));
    }
  }

  function element(tag, attributes, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (name === "text") node.textContent = value;
      else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
    }
    for (const child of children || []) if (child) node.append(child);
    return node;
  }

  function price(product) {
    if (product.price === null || product.price === undefined) return "";
    try {
      return new Intl.NumberFormat(document.documentElement.lang || undefined, {
        style: "currency",
        currency: product.currency || "EUR",
      }).format(Number(product.price));
    } catch (_) {
      return `${product.price} ${product.currency || ""}`;
    }
  }

  /** A list of product cards; clicks and impressions are recorded for `surface`. */
  function productList(hits, context) {
    const list = element("ul", { role: "list" });
    hits.forEach((hit, position) => {
      const product = hit.product;
      const image = (product.images || [])[0];
      const link = element(
        "a",
        { class: "card", href: product.url || "#", "data-sku": product.sku },
        [
          image
            ? element("img", {
                class: "photo", src: image.thumbnail_url || image.url, alt: product.title,
                loading: "lazy", decoding: "async", width: image.width, height: image.height,
              })
            : element("span", { class: "photo", role: "presentation" }),
          element("div", { class: "meta" }, [
            element("div", { class: "title", text: product.title }),
            element("div", { class: "price", text: price(product) }),
          ]),
        ],
      );
      link.addEventListener("click", () => {
        const event = { type: "click", surface: context.surface, sku: product.sku,
          position, model_key: context.modelKey, query: context.query };
        attribution(product.sku, { surface: context.surface, model_key: context.modelKey });
        enqueue(event);
        flush(true); // the page is probably leaving: send now, with sendBeacon
      });
      list.append(element("li", {}, [link]));
    });
    observeImpressions(list, hits, context);
    return list;
  }

  function observeImpressions(list, hits, context) {
    if (!("IntersectionObserver" in window)) return;
    const observer = new IntersectionObserver((entries) => {
      if (!entries.some((entry) => entry.isIntersecting)) return;
      observer.disconnect();
      hits.forEach((hit, position) =>
        enqueue({ type: "impression", surface: context.surface, sku: hit.product.sku,
          position, model_key: context.modelKey, query: context.query }));
    }, { threshold: 0.25 });
    observer.observe(list);
  }

  function skeleton(count) {
    const list = element("ul", { role: "presentation" });
    for (let i = 0; i < count; i++) list.append(element("li", {}, [element("div", { class: "skeleton" })]));
    return list;
  }

  // The product a page is about is the one its blocks are for: one "view" per page and
  // product, a co-engagement signal ("often bought together").
  const viewed = new Set();
  function recordView(sku) {
    if (!sku || viewed.has(sku)) return;
    viewed.add(sku);
    enqueue({ type: "view", surface: "product_page", sku });
  }

  /** Base: a shadow root, lazy loading when the element nears the viewport, errors hidden. */
  class VitrineBlock extends HTMLElement {
    connectedCallback() {
      if (this.shadowRoot) return;
      recordView(this.getAttribute("sku"));
      this.root = this.attachShadow({ mode: "open" });
      styled(this.root);
      this.body = element("section", { "aria-busy": "true" });
      this.root.append(this.body);
      const heading = this.getAttribute("heading") || this.defaultHeading;
      if (heading) {
        const id = `vitrine-h-${Math.random().toString(36).slice(2)}`;
        this.body.setAttribute("aria-labelledby", id);
        this.body.append(element("h2", { id, text: heading }));
      }
      this.placeholder = skeleton(Number(this.getAttribute("limit")) || 4);
      this.body.append(this.placeholder);
      const start = () => this.load().catch((error) => this.fail(error));
      if (this.hasAttribute("eager") || !("IntersectionObserver" in window)) return start();
      const observer = new IntersectionObserver((entries) => {
        if (entries.some((entry) => entry.isIntersecting)) {
          observer.disconnect();
          start();
        }
      }, { rootMargin: "300px" });
      observer.observe(this);
    }

    show(content) {
      this.placeholder.replaceWith(content);
      this.body.setAttribute("aria-busy", "false");
      this.setAttribute("data-state", "ready");
      this.dispatchEvent(new CustomEvent("vitrine:ready", { bubbles: true }));
    }

    fail(error) {
      // A recommendation block that cannot load leaves the brand's page as it was.
      console.warn("Vitrine:", error.message);
      this.hidden = true;
      this.setAttribute("data-state", "error");
      this.setAttribute("data-error", error.message);
    }
  }

  class SimilarItems extends VitrineBlock {
    get defaultHeading() { return "Similar items"; }
    get surface() { return "similar"; }
    get path() { return "similar/"; }
    async load() {
      const sku = encodeURIComponent(this.getAttribute("sku") || "");
      const data = await apiJson(apiUrl(`products/${sku}/${this.path}`,
        { limit: this.getAttribute("limit") || 8, in_stock_only: this.getAttribute("in-stock-only") }));
      if (!data.results.length) return this.fail(new Error("no results"));
      this.show(productList(data.results, { surface: this.surface, modelKey: data.model_key }));
    }
  }

  class OftenBoughtTogether extends SimilarItems {
    get defaultHeading() { return "Often bought together"; }
    get surface() { return "often_bought_together"; }
    get path() { return "often-bought-together/"; }
  }

  class CompleteTheLook extends VitrineBlock {
    get defaultHeading() { return "Complete the look"; }
    async load() {
      const sku = encodeURIComponent(this.getAttribute("sku") || "");
      const data = await apiJson(apiUrl(`products/${sku}/complete-the-look/`,
        { limit_per_category: this.getAttribute("limit") || 4 }));
      const groups = data.groups.filter((group) => group.results.length);
      if (!groups.length) return this.fail(new Error("no results"));
      const wrapper = element("div");
      for (const group of groups) {
        wrapper.append(element("h3", { text: group.category.split(">").pop().trim() }));
        wrapper.append(productList(group.results,
          { surface: "complete_the_look", modelKey: data.model_key || "" }));
      }
      this.show(wrapper);
    }
  }

  class SearchResults extends VitrineBlock {
    get defaultHeading() { return ""; }
    async load() {
      const query = this.getAttribute("query") ||
        new URLSearchParams(location.search).get(this.getAttribute("param") || "q") || "";
      if (!query.trim()) return this.fail(new Error("no query"));
      const data = await apiJson(apiUrl("search/text/", { q: query, limit: this.getAttribute("limit") || 24 }));
      enqueue({ type: "search", surface: "text_search", query, results_count: data.results.length,
        model_key: data.model_key });
      const wrapper = element("div");
      wrapper.append(element("h2", { text: data.results.length
        ? `Results for “${query}”` : `Nothing found for “${query}”` }));
      wrapper.append(productList(data.results, { surface: "text_search", modelKey: data.model_key, query }));
      this.show(wrapper);
    }
  }

  /** A dialog showing one published post: its photo with a numbered hotspot per tagged
   *  region; choosing a hotspot lists the products tagged there. Returns open(post, sku). */
  function postViewer(root) {
    const titleId = `vitrine-post-${Math.random().toString(36).slice(2)}`;
    const heading = element("h2", { id: titleId });
    const figure = element("div", { class: "post" });
    const products = element("div", { "data-products": "" });
    const close = element("button", { type: "button", class: "secondary", text: "Close" });
    const dialog = element("dialog", { "aria-labelledby": titleId },
      [heading, figure, products, element("div", { class: "row" }, [close])]);
    close.addEventListener("click", () => dialog.close());
    root.append(dialog);

    function choose(spots, hotspots, index) {
      spots.forEach((spot, i) => spot.setAttribute("aria-pressed", String(i === index)));
      const hotspot = hotspots[index];
      products.replaceChildren(
        element("h3", { text: hotspot.category.split(">").pop().trim() || "In this photo" }),
        productList(hotspot.products.map((product) => ({ product })), { surface: "posts", modelKey: "" }));
    }

    return (post, sku) => {
      heading.textContent = post.creator_handle ? `Seen on @${post.creator_handle}` : "Shop this look";
      const image = element("img", { src: post.image_url, alt: post.caption || heading.textContent,
        width: post.width, height: post.height });
      const hotspots = post.hotspots.filter((hotspot) => hotspot.products.length);
      const spots = hotspots.map((hotspot, index) => {
        const [left, top, right, bottom] = hotspot.box;
        const spot = element("button", { type: "button", class: "spot", "aria-pressed": "false",
          "aria-label": `${hotspot.category.split(">").pop().trim()}: ${hotspot.products.length} products`,
          text: String(index + 1) });
        // Through CSSOM, not a style attribute, which a strict Content-Security-Policy refuses.
        spot.style.left = `${((left + right) / 2) * 100}%`;
        spot.style.top = `${((top + bottom) / 2) * 100}%`;
        spot.addEventListener("click", () => choose(spots, hotspots, index));
        return spot;
      });
      figure.replaceChildren(image, ...spots);
      products.replaceChildren();
      // "Seen in" opens on the region where this product is tagged.
      const first = Math.max(0, hotspots.findIndex((h) => h.products.some((p) => p.sku === sku)));
      if (spots.length) choose(spots, hotspots, first);
      dialog.showModal();
      (spots[first] || close).focus();
    };
  }

  /** Published shoppable posts: those tagging `sku` ("Seen in"), or the latest ones. */
  class ShoppablePosts extends VitrineBlock {
    get defaultHeading() { return this.getAttribute("sku") ? "Seen in" : "Shop the look"; }
    async load() {
      const sku = this.getAttribute("sku") || "";
      const path = sku ? `products/${encodeURIComponent(sku)}/posts/` : "posts/";
      const data = await apiJson(apiUrl(path, { page_size: this.getAttribute("limit") || 6 }));
      if (!data.results.length) return this.fail(new Error("no posts"));
      const open = postViewer(this.root);
      const list = element("ul", { role: "list" });
      for (const post of data.results) {
        const label = post.creator_handle ? `@${post.creator_handle}` : "";
        const button = element("button", { type: "button", class: "post-thumb", "aria-haspopup": "dialog",
          "data-post": post.id }, [
          element("img", { src: post.thumbnail_url || post.image_url, loading: "lazy", decoding: "async",
            alt: post.caption || `A photo by ${label || "a customer"}` }),
          label ? element("span", { text: label }) : null,
        ]);
        button.addEventListener("click", () => open(post, sku));
        list.append(element("li", {}, [button]));
      }
      this.show(list);
    }
  }

  /** A button that opens a dialog: pick, drop or paste a photo, see the matching products. */
  class PhotoSearch extends HTMLElement {
    connectedCallback() {
      if (this.shadowRoot) return;
      const root = this.attachShadow({ mode: "open" });
      styled(root);
      const label = this.getAttribute("label") || "Search by photo";
      const open = element("button", { type: "button", part: "button", "aria-haspopup": "dialog", text: label });
      const titleId = "vitrine-photo-title";
      const dialog = element("dialog", { "aria-labelledby": titleId });
      const input = element("input", { type: "file", accept: "image/jpeg,image/png,image/webp",
        id: "vitrine-photo-input", class: "visually-hidden" });
      const pick = element("button", { type: "button", class: "secondary", text: "Choose a photo" });
      const drop = element("div", { class: "drop" }, [
        element("p", { text: "Drop a photo here, paste one, or" }), pick,
        element("label", { for: "vitrine-photo-input", class: "visually-hidden", text: "Photo to search with" }),
        input,
      ]);
      const preview = element("img", { class: "preview", alt: "Your photo", hidden: true });
      const status = element("div", { class: "status", role: "status", "aria-live": "polite" });
      const results = element("div", { "data-results": "" });
      const close = element("button", { type: "button", class: "secondary", text: "Close" });
      dialog.append(element("h2", { id: titleId, text: label }), drop, preview, status, results,
        element("div", { class: "row" }, [close]));
      root.append(open, dialog);

      open.addEventListener("click", () => { dialog.showModal(); pick.focus(); });
      close.addEventListener("click", () => dialog.close());
      pick.addEventListener("click", () => input.click());
      input.addEventListener("change", () => input.files[0] && this.search(input.files[0]));
      drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
      drop.addEventListener("dragleave", () => drop.classList.remove("over"));
      drop.addEventListener("drop", (event) => {
        event.preventDefault();
        drop.classList.remove("over");
        const file = event.dataTransfer.files[0];
        if (file) this.search(file);
      });
      dialog.addEventListener("paste", (event) => {
        const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
        if (file) this.search(file);
      });
      Object.assign(this, { dialog, preview, status, results });
    }

    async search(file) {
      const { preview, status, results } = this;
      if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
      this.previewUrl = URL.createObjectURL(file);
      preview.src = this.previewUrl;
      preview.hidden = false;
      status.className = "status";
      status.textContent = "Searching…";
      results.replaceChildren(skeleton(4));
      const form = new FormData();
      form.append("image", file);
      form.append("limit", this.getAttribute("limit") || "12");
      try {
        // multipart/form-data: a simple request, no preflight.
        const data = await apiJson(apiUrl("search/image/"), { method: "POST", body: form });
        enqueue({ type: "search", surface: "photo_search", results_count: data.results.length,
          model_key: data.model_key });
        status.textContent = data.results.length
          ? `${data.results.length} matching products` : "No close match for this photo.";
        results.replaceChildren(productList(data.results,
          { surface: "photo_search", modelKey: data.model_key }));
        this.setAttribute("data-state", "ready");
      } catch (error) {
        status.className = "status error";
        status.textContent = error.status === 429
          ? "Too many searches just now; try again in a minute."
          : `This photo could not be searched: ${error.message}`;
        results.replaceChildren();
        this.setAttribute("data-state", "error");
      }
    }
  }

  const define = (name, constructor) => customElements.get(name) || customElements.define(name, constructor);
  define("vitrine-similar", SimilarItems);
  define("vitrine-often-bought-together", OftenBoughtTogether);
  define("vitrine-complete-the-look", CompleteTheLook);
  define("vitrine-search-results", SearchResults);
  define("vitrine-photo-search", PhotoSearch);
  define("vitrine-posts", ShoppablePosts);

  window.Vitrine = {
    version: "1",
    /** The site's consent signal: true starts events (and the session id), false stops them. */
    consent(granted) {
      config.consent = Boolean(granted);
      if (!config.consent) {
        queue = [];
        try { localStorage.removeItem(SESSION_KEY); sessionStorage.removeItem(ATTRIBUTION_KEY); } catch (_) {}
      }
    },
    /** Record an event from the page itself, e.g. Vitrine.track("add_to_cart", {sku}). */
    track(type, fields) {
      const sku = fields && fields.sku;
      const from = sku ? attribution(sku) : undefined;
      enqueue({ type, surface: (fields && fields.surface) || (from && from.surface) || "product_page",
        model_key: (from && from.model_key) || "", ...(fields || {}) });
    },
    /** The anonymous session id ("" before consent): pass it to the brand's server so the
     *  purchase it reports joins the session's other events. */
    sessionId: () => sessionId(),
    /** Send queued events now; resolves when the server answered. */
    flush: () => flush(false),
  };
})();
