// idgraph console: the only script. Asks before destructive form posts (data-confirm).
// Served from this origin (CSP script-src 'self'); the pages work without it.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
