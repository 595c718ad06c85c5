// The study page: the share dialog opens as a modal <dialog> (focus kept inside, Escape closes it, focus returns to
// the button). Without this script the "Share…" link reloads the page with the dialog open in it, so nothing needs it.
(function () {
  "use strict";
  const dialog = document.getElementById("share-dialog");
  if (!dialog || typeof dialog.showModal !== "function") return;

  function focusFirst() {
    const target = dialog.querySelector("[aria-invalid='true']") || dialog.querySelector("input:checked, input:not([type=hidden])");
    if (target) target.focus();
  }

  function open(event) {
    if (event) event.preventDefault();
    if (!dialog.open) dialog.showModal();
    focusFirst();
  }

  // Show only the field of the kind of recipient chosen (both are shown without the script).
  const kinds = dialog.querySelectorAll("input[name='recipient_kind']");
  function showChosenRecipient() {
    const chosen = dialog.querySelector("input[name='recipient_kind']:checked");
    dialog.querySelectorAll("[data-recipient]").forEach(function (group) {
      group.hidden = chosen !== null && group.dataset.recipient !== chosen.value;
    });
  }
  kinds.forEach(function (input) { input.addEventListener("change", showChosenRecipient); });
  showChosenRecipient();

  document.querySelectorAll("[data-dialog-open='share-dialog']").forEach(function (opener) {
    opener.addEventListener("click", open);
  });
  dialog.querySelectorAll("[data-dialog-close]").forEach(function (closer) {
    closer.addEventListener("click", function (event) {
      event.preventDefault();
      dialog.close();
    });
  });

  // Rendered open (a refused share, or ?share=1): make it the modal dialog it is with the script.
  if (dialog.open) {
    dialog.close();
    open();
  }
})();
