// The site's one script, plain and dependency-free. Every page works without it; with it:
// - the status strip says what the beacon's status/health.json says now, and "Stopped"
//   when no pulse came for over two periods (a static page cannot tell that by itself);
// - the time form shows the local time of the UTC time typed, and find.html opens the
//   pulse at or after a time: through `beacon serve`'s pulse/time API where the site is
//   served by it, otherwise from the static time index (beacon/2.0/index/).
(function () {
  "use strict";
  var root = document.documentElement.getAttribute("data-root") || "";
  var HOUR = 3600000;

  function getJSON(path) {
    return fetch(root + path, { cache: "no-store" }).then(function (r) {
      if (r.status === 404) { return null; }
      if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
      return r.json();
    });
  }

  function iso(ms) { return new Date(ms).toISOString().replace(".000Z", "Z"); }

  // --- the status strip -------------------------------------------------------
  function showStrip(strip, state, text) {
    strip.className = "strip strip-" + state;
    strip.setAttribute("data-state", state);
    var word = strip.querySelector(".strip-word");
    var words = { healthy: "Healthy", degraded: "Degraded", stopped: "Stopped", unknown: "Status" };
    word.textContent = words[state] || state;
    strip.querySelector(".strip-text").textContent = text;
  }

  function judge(strip, health) {
    var last = health.lastPulseMs, period = health.period;
    if (typeof last === "number" && typeof period === "number" && Date.now() > last + 2 * period) {
      showStrip(strip, "stopped", "no pulse since " + iso(last) + " (one is due every " +
        period / 1000 + " s).");
      return;
    }
    if (health.state === "degraded" && health.degraded && health.degraded.length) {
      showStrip(strip, "degraded", health.degraded.map(function (d) { return d.message; }).join("; ") + ".");
    } else if (health.state === "healthy" && health.summary) {
      showStrip(strip, "healthy", health.summary);
    }
  }

  function strip() {
    var el = document.getElementById("status-strip");
    if (!el) { return; }
    var known = {
      state: el.getAttribute("data-state"),
      lastPulseMs: el.hasAttribute("data-last") ? Number(el.getAttribute("data-last")) : null,
      period: el.hasAttribute("data-period") ? Number(el.getAttribute("data-period")) : null,
      degraded: null
    };
    getJSON("status/health.json").then(function (health) {
      judge(el, health || known);
    }).catch(function () { judge(el, known); });
  }

  // --- find a pulse by time -------------------------------------------------------
  function entry(list) { return list ? { time: list[0], chain: list[1], pulse: list[2] } : null; }

  // The static index: at most two small GETs (timeindex.py has the rules).
  function fromIndex(kind, t) {
    var hour = t - (t % HOUR);
    var key = "beacon/2.0/index/hour/" + new Date(hour).toISOString().slice(0, 13) + ".json";
    return getJSON(key).then(function (index) {
      if (index) {
        for (var i = 0; i < index.pulses.length; i++) {
          var p = index.pulses[i];
          if (kind === "next" ? p[0] > t : p[0] >= t) { return entry(p); }
        }
        return entry(index.next);
      }
      return getJSON("beacon/2.0/index/bounds.json").then(function (bounds) {
        if (!bounds || !bounds.first) { return null; }
        return t < bounds.first[0] ? entry(bounds.first) : null;
      });
    });
  }

  // `beacon serve` answers NIST's pulse/time queries; a static host does not (except at
  // the exact time of a pulse), so its 404 falls through to the index.
  function fromGateway(kind, t) {
    var path = "beacon/2.0/pulse/time/" + (kind === "next" ? "next/" : "") + t;
    return getJSON(path).then(function (body) {
      var p = body && body.pulse;
      if (!p || typeof p.chainIndex !== "number") { return null; }
      return { time: Date.parse(p.timeStamp), chain: p.chainIndex, pulse: p.pulseIndex };
    }).catch(function () { return null; });
  }

  function find(kind, t) {
    return fromGateway(kind, t).then(function (found) { return found || fromIndex(kind, t); });
  }

  function parseUTC(text) {
    if (!text) { return NaN; }
    if (/^\d+$/.test(text)) { return Number(text); }
    var m = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?Z?$/.exec(text);
    if (!m) { return NaN; }
    return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0), +((m[7] || "0") + "00").slice(0, 3));
  }

  function findPage() {
    var out = document.getElementById("find-result");
    if (!out || !out.hasAttribute("data-find")) { return; }
    var q = new URLSearchParams(location.search);
    var kind = q.has("next") ? "next" : "at_or_after";
    var t = parseUTC(q.get("next") || q.get("t") || q.get("at"));
    if (!q.has("next") && !q.has("t") && !q.has("at")) {
      out.textContent = "Type a UTC date and time below.";
      return;
    }
    if (isNaN(t)) {
      out.textContent = "Not a time: give a UTC date and time like 2027-01-01T12:00.";
      return;
    }
    var asked = (kind === "next" ? "the first pulse after " : "the first pulse at or after ") + iso(t);
    out.textContent = "Looking up " + asked + "…";
    find(kind, t).then(function (found) {
      if (!found) {
        out.textContent = "There is no pulse yet that is " + asked.replace("the first pulse ", "") +
          ". Pulses come out once their time has passed.";
        out.setAttribute("data-outcome", "none");
        return;
      }
      out.setAttribute("data-outcome", "found");
      location.replace(root + "html/chain/" + found.chain + "/pulse/" + found.pulse + ".html");
    }).catch(function (err) {
      out.textContent = "The lookup failed: " + err.message;
      out.setAttribute("data-outcome", "error");
    });
  }

  function forms() {
    var input = document.getElementById("find-at");
    var local = document.getElementById("find-local");
    if (!input || !local) { return; }
    function show() {
      var t = parseUTC(input.value);
      local.textContent = isNaN(t) ? "" : "Your local time: " + new Date(t).toString();
    }
    input.addEventListener("input", show);
    var q = new URLSearchParams(location.search);
    if (q.get("at")) { input.value = q.get("at"); show(); }
  }

  strip();
  forms();
  findPage();
})();
