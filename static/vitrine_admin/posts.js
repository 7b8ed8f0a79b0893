/* The post review panel: drag a box on the photo to fill in the "add a region" form's edges
 * (percent of the photo). Delegated from the document, so it keeps working after htmx
 * swaps the panel in. The form still works by typing the edges, without this script. */
(() => {
  "use strict";
  const FIELDS = ["left", "top", "right", "bottom"];
  let drag = null;

  function stageOf(target) {
    const stage = target.closest && target.closest(".vt-post__stage");
    const form = stage && stage.closest(".vt-post").querySelector("[data-testid=region-add]");
    return stage && form ? { stage, form } : null;
  }

  function fraction(stage, event) {
    const rect = stage.getBoundingClientRect();
    const clamp = (value) => Math.min(1, Math.max(0, value));
    return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
  }

  function show(current) {
    const [x0, y0] = current.start;
    const [x1, y1] = current.end;
    const box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
    Object.assign(current.sketch.style, {
      left: `${box[0] * 100}%`, top: `${box[1] * 100}%`,
      width: `${(box[2] - box[0]) * 100}%`, height: `${(box[3] - box[1]) * 100}%`,
    });
    FIELDS.forEach((name, i) => { current.form.elements[name].value = (box[i] * 100).toFixed(1); });
  }

  document.addEventListener("pointerdown", (event) => {
    const found = stageOf(event.target);
    if (!found || event.button !== 0) return;
    event.preventDefault();
    found.stage.setPointerCapture(event.pointerId);
    const sketch = found.stage.querySelector(".vt-post__sketch") ||
      found.stage.appendChild(Object.assign(document.createElement("span"), { className: "vt-post__sketch" }));
    const point = fraction(found.stage, event);
    drag = { ...found, sketch, start: point, end: point, pointer: event.pointerId };
    show(drag);
  });
  document.addEventListener("pointermove", (event) => {
    if (!drag || event.pointerId !== drag.pointer) return;
    drag.end = fraction(drag.stage, event);
    show(drag);
  });
  const finish = (event) => {
    if (!drag || event.pointerId !== drag.pointer) return;
    drag.form.querySelector("input[name=sku]").focus();
    drag = null;
  };
  document.addEventListener("pointerup", finish);
  document.addEventListener("pointercancel", finish);
  const mark = () => document.querySelectorAll(".vt-post__stage").forEach((stage) => {
    if (stageOf(stage)) stage.dataset.drawable = "";
  });
  document.addEventListener("DOMContentLoaded", mark);
  document.addEventListener("htmx:afterSwap", mark);
})();
