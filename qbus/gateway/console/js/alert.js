// The page's one alert region (#alert, role="alert"): what a refused request said.

const box = () => document.getElementById("alert");

/** Show an error: the problem document's title and detail, and its code in brackets. */
export function showError(error) {
  const alert = box();
  alert.hidden = false;
  alert.textContent = error.code ? `${error.message} [${error.code}]` : error.message;
}

export function clearError() {
  box().hidden = true;
}
