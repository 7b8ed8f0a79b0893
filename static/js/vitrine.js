// Vitrine shopper pages: the few things a browser feature needs plain JavaScript for.
// Everything here enhances a page that already works without it (forms submit normally).
(function () {
  "use strict";

  // --- Photo search: file picker, camera, drag and drop, paste, with a preview ----------
  // All routes end in the one <input type="file" name="image"> so the form posts the same
  // way whichever way the photo arrived.
  const ACCEPTED = ["image/jpeg", "image/png", "image/webp", "image/gif", "image/heic", "image/heif"];

  function initPhotoSearch(form) {
    const input = form.querySelector("[data-photo-input]");
    const camera = form.querySelector("[data-camera-input]");
    const zone = form.querySelector("[data-dropzone]");
    const empty = form.querySelector("[data-dropzone-empty]");
    const preview = form.querySelector("[data-dropzone-preview]");
    const img = form.querySelector("[data-preview-img]");
    const clientError = form.querySelector("[data-photo-client-error]");
    const submit = form.querySelector("[data-photo-submit]");
    let previewUrl = null;

    function showError(message) {
      clientError.textContent = message;
      clientError.hidden = !message;
    }

    function useFile(file) {
      if (!file) return;
      if (file.type && !ACCEPTED.includes(file.type)) {
        showError("That file is not a photo. Choose a JPEG, PNG or WebP image.");
        return;
      }
      showError("");
      const serverError = form.querySelector("#photo-error");
      if (serverError) serverError.remove();
      form.classList.remove("has-error");
      if (input.files[0] !== file) {
        const transfer = new DataTransfer();
        transfer.items.add(file);
        input.files = transfer.files;
      }
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = URL.createObjectURL(file);
      img.src = previewUrl;
      empty.hidden = true;
      preview.hidden = false;
      submit.focus();
    }

    input.addEventListener("change", () => useFile(input.files[0]));
    camera.addEventListener("change", () => useFile(camera.files[0]));
    form.querySelector("[data-photo-clear]").addEventListener("click", () => {
      input.value = "";
      camera.value = "";
      preview.hidden = true;
      empty.hidden = false;
      input.focus();
    });

    ["dragenter", "dragover"].forEach((type) =>
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("is-dragover");
      })
    );
    ["dragleave", "drop"].forEach((type) =>
      zone.addEventListener(type, () => zone.classList.remove("is-dragover"))
    );
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      useFile(event.dataTransfer.files[0]);
    });
    // Paste anywhere on the page (a screenshot, a copied image from another tab).
    document.addEventListener("paste", (event) => {
      const item = Array.from(event.clipboardData ? event.clipboardData.items : []).find(
        (entry) => entry.kind === "file" && entry.type.startsWith("image/")
      );
      if (item) {
        event.preventDefault();
        useFile(item.getAsFile());
      }
    });

    form.addEventListener("submit", (event) => {
      if (!input.files.length) {
        event.preventDefault();
        showError("Choose a photo first.");
        return;
      }
      submit.classList.add("is-loading");
      submit.disabled = true;
      form.querySelector("[data-submit-label]").textContent = "Searching…";
    });
    // Back/forward cache: a restored page must not keep the disabled "Searching…" button.
    window.addEventListener("pageshow", () => {
      submit.classList.remove("is-loading");
      submit.disabled = false;
      form.querySelector("[data-submit-label]").textContent = "Find similar products";
    });
  }

  // --- Crop box: search one region of the photo ("shop the look") ------------------------
  // The region is kept as fractions of the photo in the hidden `crop` input; changing it
  // fires `change`, which the filter form (htmx) turns into a new search and a new URL.
  function initCrop(stage) {
    const img = stage.querySelector("[data-crop-img]");
    const box = stage.querySelector("[data-crop-box]");
    const form = stage.closest("form");
    const field = form.querySelector("[data-crop-input]");
    const reset = form.querySelector("[data-crop-reset]");
    let crop = parse(field.value);
    let drag = null;
    let keyTimer = null;

    function parse(value) {
      const parts = (value || "").split(",").map(Number);
      return parts.length === 4 && parts.every((n) => n >= 0 && n <= 1) ? parts : null;
    }
    const clamp = (n) => Math.min(1, Math.max(0, n));

    function render() {
      stage.classList.toggle("has-crop", !!crop);
      box.hidden = !crop;
      reset.hidden = !crop;
      if (!crop) {
        box.setAttribute("aria-valuetext", "Whole photo");
        return;
      }
      const [l, t, r, b] = crop;
      const w = img.clientWidth;
      const h = img.clientHeight;
      Object.assign(box.style, {
        left: l * 100 + "%", top: t * 100 + "%",
        width: (r - l) * 100 + "%", height: (b - t) * 100 + "%",
        // Show the selected region un-dimmed by drawing the photo inside the box.
        backgroundImage: "url('" + img.currentSrc + "')",
        backgroundSize: w + "px " + h + "px",
        backgroundPosition: -l * w - 2 + "px " + (-t * h - 2) + "px",
      });
      box.setAttribute(
        "aria-valuetext",
        "Region from " + Math.round(l * 100) + "% to " + Math.round(r * 100) + "% across, " +
          Math.round(t * 100) + "% to " + Math.round(b * 100) + "% down"
      );
    }

    function commit() {
      const value = crop ? crop.map((n) => n.toFixed(3)).join(",") : "";
      if (field.value === value) return;
      field.value = value;
      field.dispatchEvent(new Event("change", { bubbles: true }));
    }

    function point(event) {
      const rect = img.getBoundingClientRect();
      return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
    }

    // Hotspots: the item regions found in the photo; choosing one searches its region. They
    // may arrive after the page (htmx swaps them in), so clicks are handled on the stage and
    // the pressed one is marked again when they land.
    function markHotspots() {
      const value = crop ? crop.map((n) => n.toFixed(3)).join(",") : "";
      stage.querySelectorAll("[data-hotspot]").forEach((spot) =>
        spot.setAttribute("aria-pressed", String(spot.dataset.hotspot === value)));
    }
    stage.addEventListener("click", (event) => {
      const spot = event.target.closest("[data-hotspot]");
      if (!spot) return;
      crop = parse(spot.dataset.hotspot);
      render();
      commit();
      markHotspots();
    });
    stage.addEventListener("htmx:load", markHotspots);

    stage.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      if (event.target.closest("[data-hotspot]")) return; // a tap on a hotspot, not a drag
      event.preventDefault();
      stage.setPointerCapture(event.pointerId);
      const [x, y] = point(event);
      const inside = crop && event.target === box;
      drag = inside ? { mode: "move", x, y, start: crop.slice() } : { mode: "draw", x, y };
    });
    stage.addEventListener("pointermove", (event) => {
      if (!drag) return;
      const [x, y] = point(event);
      if (drag.mode === "draw") {
        crop = [Math.min(drag.x, x), Math.min(drag.y, y), Math.max(drag.x, x), Math.max(drag.y, y)];
      } else {
        const [l, t, r, b] = drag.start;
        const dx = Math.min(Math.max(x - drag.x, -l), 1 - r);
        const dy = Math.min(Math.max(y - drag.y, -t), 1 - b);
        crop = [l + dx, t + dy, r + dx, b + dy];
      }
      render();
    });
    stage.addEventListener("pointerup", () => {
      if (!drag) return;
      drag = null;
      // A click without a drag is not a selection.
      if (crop && (crop[2] - crop[0] < 0.03 || crop[3] - crop[1] < 0.03)) crop = parse(field.value);
      render();
      commit();
      markHotspots();
      if (crop) box.focus({ preventScroll: true });
    });

    box.addEventListener("keydown", (event) => {
      const step = 0.02;
      const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      const move = moves[event.key];
      if (!move || !crop) return;
      event.preventDefault();
      let [l, t, r, b] = crop;
      if (event.shiftKey) {
        r = clamp(Math.max(l + 0.05, r + move[0]));
        b = clamp(Math.max(t + 0.05, b + move[1]));
      } else {
        const dx = Math.min(Math.max(move[0], -l), 1 - r);
        const dy = Math.min(Math.max(move[1], -t), 1 - b);
        [l, t, r, b] = [l + dx, t + dy, r + dx, b + dy];
      }
      crop = [l, t, r, b];
      render();
      clearTimeout(keyTimer);
      keyTimer = setTimeout(commit, 500);
    });
    reset.addEventListener("click", () => {
      crop = null;
      render();
      commit();
      markHotspots();
    });

    // The stage is the tab stop while no region is selected: Enter selects the centre.
    stage.tabIndex = 0;
    stage.setAttribute("aria-describedby", "crop-hint");
    stage.addEventListener("keydown", (event) => {
      if (event.target === stage && event.key === "Enter" && !crop) {
        crop = [0.25, 0.25, 0.75, 0.75];
        render();
        commit();
        box.focus();
      }
    });
    if (img.complete) render();
    img.addEventListener("load", render);
    window.addEventListener("resize", render);
  }

  // --- Product gallery -------------------------------------------------------------------
  function initGallery(gallery) {
    const main = gallery.querySelector("[data-gallery-main]");
    gallery.querySelectorAll("[data-gallery-thumb]").forEach((thumb) =>
      thumb.addEventListener("click", () => {
        main.src = thumb.dataset.src;
        gallery.querySelectorAll("[data-gallery-thumb]").forEach((other) => {
          other.classList.toggle("is-active", other === thumb);
          other.toggleAttribute("aria-current", other === thumb);
        });
      })
    );
  }

  // On phones the filter panel starts closed so results come first.
  function initFiltersPanel(panel) {
    if (window.matchMedia("(max-width: 899px)").matches) panel.open = false;
  }

  function init() {
    document.querySelectorAll("[data-photo-search]").forEach(initPhotoSearch);
    document.querySelectorAll("[data-crop-stage]").forEach(initCrop);
    document.querySelectorAll("[data-gallery]").forEach(initGallery);
    document.querySelectorAll("[data-filters-panel]").forEach(initFiltersPanel);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();

  // htmx marks the busy region for screen readers while a new grid loads.
  document.addEventListener("htmx:beforeRequest", () => document.getElementById("results")?.setAttribute("aria-busy", "true"));
  document.addEventListener("htmx:afterSettle", () => document.getElementById("results")?.setAttribute("aria-busy", "false"));
})();
