// Lookbook editor: drag rows of the items table to reorder them. Dropping renumbers the
// position fields in table order; saving the form stores the new order. The position
// numbers stay editable, so the keyboard works too.
//
// The suggest panel (templates/admin/catalog/lookbook/change_form.html) works on the form,
// never on the database: its requests carry the products of the item rows, saved or not,
// and "Add" adds a row to the form the way "Add another" does, with the product chosen.
// Nothing is posted and the page never reloads, so unsaved edits stay; Save stores all.
(function () {
  "use strict";

  function itemsBody() {
    const group = document.querySelector(".lookbook-items");
    return group && group.querySelector("tbody");
  }
  function itemRows() {
    const body = itemsBody();
    return body ? Array.from(body.querySelectorAll("tr.form-row:not(.empty-form)")) : [];
  }
  function productOf(row) {
    const select = row.querySelector("select[name$='-product']");
    return select ? select.value : "";
  }
  function isDeleted(row) {
    const box = row.querySelector("input[name$='-DELETE']");
    return Boolean(box && box.checked);
  }
  // The products of the board as the form has it now, in table order.
  function boardProducts() {
    return itemRows().filter((row) => !isDeleted(row)).map(productOf).filter(Boolean);
  }

  // Requests from the panel say what the form holds: `item` the board's products, `exclude`
  // those in rows marked for deletion. Registered at once: the panel loads on page load.
  document.addEventListener("htmx:configRequest", (event) => {
    if (!event.detail.elt.closest || !event.detail.elt.closest("[data-vt-suggest]")) return;
    event.detail.parameters.item = boardProducts();
    event.detail.parameters.exclude = itemRows().filter(isDeleted).map(productOf).filter(Boolean);
  });

  // The product autocomplete (the admin's select2) asks the server 250 ms after the last
  // keystroke, and Enter takes the highlighted option of the list on screen. An Enter
  // pressed before the answer for what was typed came took an option of an older list (or
  // none): such an Enter waits for that answer, then takes its first option (the server
  // lists an exact SKU first: ProductAdmin.get_search_results).
  function autocompleteEnterWaitsForItsAnswer() {
    const $ = window.django && window.django.jQuery;
    if (!$) return;
    const isSearch = (options) => String(options.url || "").includes("/autocomplete/");
    const termOf = (options) =>
      new URL(options.url, window.location.href).searchParams.get("term") || "";
    let searching = 0; // requests on their way
    let shown = null; // the term whose answer is the list on screen
    let waiting = null; // the search field whose Enter waits
    $(document).on("ajaxSend", (event, xhr, options) => {
      if (isSearch(options)) searching += 1;
    });
    $(document).on("ajaxComplete", (event, xhr, options) => {
      if (!isSearch(options)) return;
      searching = Math.max(0, searching - 1);
      if (xhr.statusText !== "abort") shown = termOf(options);
      if (searching || !waiting || waiting.value !== shown) return;
      const field = waiting;
      waiting = null;
      // select2 shows the answer in a promise callback, queued before this one: press Enter
      // again once the new list is on screen.
      window.setTimeout(() => {
        if (field.isConnected) $(field).trigger($.Event("keydown", { which: 13, keyCode: 13 }));
      }, 0);
    });
    const isSearchField = (element) =>
      element && element.classList && element.classList.contains("select2-search__field");
    document.addEventListener(
      "keydown",
      (event) => {
        if (event.key !== "Enter" || !isSearchField(event.target)) return;
        if (!searching && event.target.value === shown) return; // the list is current
        event.preventDefault();
        event.stopPropagation(); // before select2's own handler on the field
        waiting = event.target;
      },
      true,
    );
    // Typing on after Enter is a change of mind: that Enter no longer counts.
    document.addEventListener(
      "input",
      (event) => {
        if (event.target === waiting) waiting = null;
      },
      true,
    );
  }

  function init() {
    autocompleteEnterWaitsForItsAnswer();
    const body = itemsBody();
    const panel = document.querySelector("[data-vt-suggest]");
    if (!body) return;
    let dragged = null;
    let lastAdded = null;

    function renumber() {
      itemRows().forEach((row, index) => {
        const input = row.querySelector("input[name$='-position']");
        if (input) input.value = index;
      });
    }
    // A row with no stored id is new: say so until Save stores it.
    function markUnsaved(row) {
      const id = row.querySelector("input[name$='-id']");
      if ((id && id.value) || row.classList.contains("vt-unsaved")) return;
      row.classList.add("vt-unsaved");
      const cell = row.querySelector("td.original");
      if (cell) {
        const badge = document.createElement("span");
        badge.className = "vt-unsaved-badge";
        badge.textContent = "Unsaved";
        cell.prepend(badge);
      }
    }
    function prepare(row) {
      markUnsaved(row);
      if (row.dataset.vtDraggable) return;
      row.dataset.vtDraggable = "1";
      row.draggable = true;
      const cell = row.querySelector("td.field-position");
      if (cell) {
        const handle = document.createElement("span");
        handle.className = "vt-handle";
        handle.title = "Drag to reorder";
        handle.setAttribute("aria-hidden", "true");
        handle.textContent = "⠿";
        cell.prepend(handle);
      }
      row.addEventListener("dragstart", (event) => {
        dragged = row;
        row.classList.add("vt-dragging");
        event.dataTransfer.effectAllowed = "move";
      });
      row.addEventListener("dragend", () => {
        row.classList.remove("vt-dragging");
        dragged = null;
        renumber();
      });
      row.addEventListener("dragover", (event) => {
        if (!dragged || dragged === row) return;
        event.preventDefault();
        const rect = row.getBoundingClientRect();
        const after = event.clientY > rect.top + rect.height / 2;
        body.insertBefore(dragged, after ? row.nextSibling : row);
      });
    }
    itemRows().forEach(prepare);
    // Rows added with "Add another" (or by the panel) get a handle too, and the next free
    // position.
    document.addEventListener("formset:added", (event) => {
      const row = event.target.closest ? event.target.closest("tr") || event.target : event.target;
      if (row && row.matches && row.matches("tr.form-row")) {
        lastAdded = row;
        prepare(row);
        renumber();
      }
    });

    if (!panel) return;
    const suggestBody = panel.querySelector("#vt-suggest-body");
    const status = panel.querySelector("#vt-suggest-status");
    const error = panel.querySelector("#vt-suggest-error");
    const refresh = panel.querySelector("[data-vt-suggest-refresh]");

    function announce(message) {
      status.textContent = message;
    }
    function showError(message) {
      error.textContent = message;
      error.hidden = false;
    }
    function clearError() {
      error.textContent = "";
      error.hidden = true;
    }

    // Take a suggestion out of the panel. When it held the focus (or its Add was just used:
    // some browsers don't focus a clicked button), the focus goes to the next suggestion of
    // its list (or the one before, or the Refresh button) so the keyboard can go on adding.
    function suggestionRemove(item, used = false) {
      const list = item.parentElement;
      const hadFocus = used || item.contains(document.activeElement);
      const next = item.nextElementSibling || item.previousElementSibling;
      item.remove();
      if (!list.querySelector("li")) {
        const empty = document.createElement("p");
        empty.className = "vt-empty";
        empty.textContent = "All of these are on the board now: Refresh for more.";
        list.replaceWith(empty);
      }
      if (hadFocus) {
        const target =
          (next && next.querySelector("[data-vt-add]")) ||
          panel.querySelector("[data-vt-add]") ||
          refresh;
        target.focus();
      }
    }
    function suggestionsOf(productId) {
      return Array.from(panel.querySelectorAll("li[data-product]")).filter(
        (item) => item.dataset.product === productId,
      );
    }

    function productAdd(button) {
      const productId = button.dataset.product;
      const title = button.dataset.title;
      const item = button.closest("li");
      clearError();
      if (boardProducts().includes(productId)) {
        announce(`${title} is already in the lookbook.`);
        suggestionRemove(item, true);
        return;
      }
      const addLink = body.querySelector("tr.add-row a");
      if (!addLink) {
        showError("Items can't be added to this lookbook here: you may not have the permission.");
        return;
      }
      lastAdded = null;
      addLink.click(); // Django's inlines.js adds the row at the end, then sends formset:added
      const row = lastAdded;
      const select = row && row.querySelector("select[name$='-product']");
      if (!select) {
        showError(`Couldn't add ${title}: the items table did not take a new row.`);
        return;
      }
      suggestionsOf(productId).forEach((other) => suggestionRemove(other, other === item));
      select.append(new Option(button.dataset.label, productId, true, true));
      // The admin's autocomplete (select2) listens to jQuery's change event.
      if (window.django && window.django.jQuery) window.django.jQuery(select).trigger("change");
      else select.dispatchEvent(new Event("change", { bubbles: true }));
      const preview = row.querySelector("td.field-preview");
      if (preview && button.dataset.thumb) {
        const img = document.createElement("img");
        img.src = button.dataset.thumb;
        img.alt = "";
        img.className = "vt-row-thumb";
        preview.replaceChildren(img);
      }
      announce(`Added ${title} to the lookbook. Save to keep it.`);
    }

    panel.addEventListener("click", (event) => {
      const button = event.target.closest("[data-vt-add]");
      if (!button) return;
      event.preventDefault();
      productAdd(button);
    });

    // A product chosen in a row by autocomplete is on the board: don't suggest it. A first
    // product on an empty board asks for suggestions.
    if (window.django && window.django.jQuery) {
      window.django.jQuery(body).on("change", "select[name$='-product']", (event) => {
        if (event.target.value) {
          suggestionsOf(event.target.value).forEach((item) => suggestionRemove(item));
        }
        if (suggestBody.querySelector("[data-vt-empty-board]") && boardProducts().length) {
          refresh.click();
        }
      });
    }

    // Errors keep what is on the page (the form, the last suggestions) and say what failed.
    function ownEvent(event) {
      return panel.contains(event.detail.elt);
    }
    function loadingDrop() {
      const loading = suggestBody.querySelector(".vt-loading");
      if (loading) loading.remove();
    }
    panel.addEventListener("htmx:beforeRequest", () => {
      clearError();
      announce("");
    });
    panel.addEventListener("htmx:beforeSwap", (event) => {
      // An ended session answers with the login page (a followed redirect): not a panel.
      const url = event.detail.xhr.responseURL;
      if (url && !new URL(url).pathname.endsWith("/suggest/")) {
        event.detail.shouldSwap = false;
        loadingDrop();
        showError(
          "Couldn't load suggestions: your session has ended. Log in again in another tab, " +
            "then Refresh. Your edits on this page are kept.",
        );
      }
    });
    document.addEventListener("htmx:responseError", (event) => {
      if (!ownEvent(event)) return;
      loadingDrop();
      showError(
        `Couldn't load suggestions (the server answered ${event.detail.xhr.status}). ` +
          "Your edits on this page are kept: try Refresh.",
      );
    });
    for (const name of ["htmx:sendError", "htmx:timeout"]) {
      document.addEventListener(name, (event) => {
        if (!ownEvent(event)) return;
        loadingDrop();
        showError(
          "Couldn't reach the server for suggestions. Your edits on this page are kept: " +
            "try Refresh.",
        );
      });
    }
    // Products added while the request was on its way are not suggested either.
    panel.addEventListener("htmx:afterSwap", () => {
      const board = boardProducts();
      panel.querySelectorAll("li[data-product]").forEach((item) => {
        if (board.includes(item.dataset.product)) suggestionRemove(item);
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
