// Prefill the sign-up form's time zone with the browser's own (Intl), when the field still
// holds the server's default. Without JavaScript the default (Asia/Karachi) stays.
(function () {
  "use strict";
  var field = document.querySelector("input[data-detect-timezone]");
  if (!field || typeof Intl === "undefined" || !Intl.DateTimeFormat) {
    return;
  }
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (error) {
    return;
  }
  if (/^[A-Za-z_]+(\/[A-Za-z0-9_+\-]+)*$/.test(zone) && field.value === field.defaultValue) {
    field.value = zone;
  }
})();
