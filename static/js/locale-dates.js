/* Dates and times in the reader's own locale and time zone: every <time datetime="..."> the server rendered (with a
   readable fallback text) is rewritten with Intl.DateTimeFormat. A date alone ("2026-11-02") is a calendar day and
   stays that day everywhere; a date with a time and offset is shown in the browser's time zone.
   data-format="date" shows only the day of a date-time; data-format="none" leaves an element as the server wrote it. */
(function () {
  "use strict";

  if (!window.Intl || !Intl.DateTimeFormat) {
    return; // the server's text stays
  }

  const DAY = /^(\d{4})-(\d{2})-(\d{2})$/;
  const locales = navigator.languages && navigator.languages.length ? navigator.languages : undefined;
  const formats = {
    // A calendar day is formatted in UTC from UTC midnight, so no time zone can move it to the day before.
    day: new Intl.DateTimeFormat(locales, { dateStyle: "medium", timeZone: "UTC" }),
    date: new Intl.DateTimeFormat(locales, { dateStyle: "medium" }),
    datetime: new Intl.DateTimeFormat(locales, { dateStyle: "medium", timeStyle: "short" }),
    full: new Intl.DateTimeFormat(locales, { dateStyle: "full", timeStyle: "long" }),
  };

  function localise(element) {
    const value = element.getAttribute("datetime");
    const wanted = element.dataset.format;
    if (!value || wanted === "none" || element.dataset.localised) {
      return;
    }
    const day = DAY.exec(value);
    let text;
    let title;
    if (day) {
      text = formats.day.format(new Date(Date.UTC(+day[1], +day[2] - 1, +day[3])));
    } else {
      const moment = new Date(value);
      if (isNaN(moment.getTime())) {
        return; // not a form we read: keep the server's text
      }
      text = (wanted === "date" ? formats.date : formats.datetime).format(moment);
      title = formats.full.format(moment);
    }
    element.textContent = text;
    if (title && !element.title) {
      element.title = title;
    }
    element.dataset.localised = "true";
  }

  function localiseAll(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(localise);
  }

  window.medarchiveLocaliseDates = localiseAll; // for content added later by other scripts
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () {
      localiseAll();
    });
  } else {
    localiseAll();
  }
})();
