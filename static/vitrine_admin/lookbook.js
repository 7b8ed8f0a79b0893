// Lookbook editor: drag rows of the items table to reorder them. Dropping renumbers the
// position fields in table order; saving the form stores the new order. The position
// numbers stay editable, so the keyboard works too.
(function () {
  "use strict";
  function init() {
    const group = document.querySelector(".lookbook-items");
    const body = group && group.querySelector("tbody");
    if (!body) return;
    let dragged = null;

    function rows() {
      return Array.from(body.querySelectorAll("tr.form-row:not(.empty-form)"));
    }
    function renumber() {
      rows().forEach((row, index) => {
        const input = row.querySelector("input[name$='-position']");
        if (input) input.value = index;
      });
    }
    function prepare(row) {
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
    rows().forEach(prepare);
    // Rows added with "Add another" get a handle too, and the next free position.
    document.addEventListener("formset:added", (event) => {
      const row = event.target.closest ? event.target.closest("tr") || event.target : event.target;
      if (row && row.matches && row.matches("tr.form-row")) {
        prepare(row);
        renumber();
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
