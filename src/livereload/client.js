// touchwire's LiveReload client (protocol 7), served by `touchwire watch --livereload` at
// /livereload.js. It reloads the page when touchwire says the app is back, re-links a changed
// stylesheet in place, and shows a failed reload (file:line and the excerpt) as an overlay.
// With `livereload.js?swap` it swaps in the new page's body instead of navigating, where that is
// the same as a reload (see swap below).
(function () {
  "use strict";
  if (window.__touchwire) return;
  var PROTOCOL = "http://livereload.com/protocols/official-7";
  var MAX_TRIES = 2000; // reconnects, at most 5 s apart: gives up after hours, not at once
  var OVERLAY = "touchwire-overlay";
  var script = document.currentScript;
  var origin = script && script.src ? new URL(script.src) : new URL("http://localhost:35729/");
  var url = (origin.protocol === "https:" ? "wss://" : "ws://") + origin.host + "/livereload";
  // State the tests and curious users can read.
  var state = (window.__touchwire = { connected: false, reloads: 0, sheets: 0, errors: 0, swaps: 0 });
  var SWAP = origin.searchParams.has("swap");
  var tries = 0;
  var delay = 100;
  // Counts what the server said: a swap whose page arrives after a later word is dropped.
  var generation = 0;

  function connect() {
    var socket;
    try {
      socket = new WebSocket(url);
    } catch (e) {
      return retry();
    }
    socket.onopen = function () {
      tries = 0;
      delay = 100;
      socket.send(JSON.stringify({ command: "hello", protocols: [PROTOCOL] }));
    };
    socket.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      handle(message, socket);
    };
    socket.onclose = function () {
      state.connected = false;
      retry();
    };
  }

  function retry() {
    if (++tries > MAX_TRIES) return;
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 5000);
  }

  function handle(message, socket) {
    switch (message.command) {
      case "hello":
        state.connected = true;
        socket.send(JSON.stringify({ command: "info", plugins: {}, url: location.href }));
        break;
      case "reload":
        generation++;
        reload(String(message.path || ""), message.liveCSS !== false, message.swap === true);
        break;
      case "touchwire-error":
        generation++;
        state.errors++;
        showError(message);
        break;
      case "alert":
        showError({ message: String(message.message || "") });
        break;
    }
  }

  function isStylesheet(path) {
    return /\.css$/i.test(path);
  }

  // `swappable`: touchwire says only code changed (an asset that changed with it must load).
  function reload(path, liveCSS, swappable) {
    if (liveCSS && isStylesheet(path)) {
      state.sheets++;
      return relink(path);
    }
    state.reloads++;
    if (SWAP && swappable) return swap(generation);
    location.reload();
  }

  // A reload without a navigation: the page is fetched and its body replaces this one, so the
  // new text shows as soon as the app answers (a navigation costs a browser tens of ms more).
  // Only where that is what a reload would show: an HTML answer (an error status, a redirect or
  // anything else is left to a real reload, which shows it as the browser would), the same
  // head (but its title) and the same attributes on <html>, and no script in either body but
  // this one (a swapped-in script does not run, an old one would keep running). Page state in
  // `window` stays; the scroll position is kept. `asked` is the generation that asked for it.
  function swap(asked) {
    fetch(location.href, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        var type = response.headers.get("content-type") || "";
        if (!response.ok || response.redirected || type.indexOf("text/html") < 0) throw new Error("not the page");
        return response.text();
      })
      .then(function (html) {
        // A later reload or failure came meanwhile: its own word stands.
        if (asked !== generation) return;
        var next = new DOMParser().parseFromString(html, "text/html");
        var same =
          next.body &&
          head(next) === head(document) &&
          attributes(next.documentElement) === attributes(document.documentElement) &&
          !foreignScript(next.body) &&
          !foreignScript(document.body);
        if (!same) throw new Error("a reload would differ");
        var x = window.scrollX;
        var y = window.scrollY;
        document.title = next.title;
        document.body.replaceWith(document.adoptNode(next.body));
        window.scrollTo(x, y);
        state.swaps++;
      })
      .catch(function () {
        if (asked === generation) location.reload();
      });
  }

  // The head as a string, but its title, with the stylesheet links this script re-linked
  // (`?livereload=`) as the page wrote them.
  function head(doc) {
    if (!doc.head) return "";
    return Array.prototype.map
      .call(doc.head.children, function (node) {
        if (node.tagName === "TITLE") return "";
        if (node.tagName === "LINK" && node.getAttribute("href")) {
          var href = new URL(node.getAttribute("href"), location.href);
          href.searchParams.delete("livereload");
          return "LINK " + node.getAttribute("rel") + " " + href.href;
        }
        return node.outerHTML;
      })
      .join("\n");
  }

  function attributes(element) {
    return Array.prototype.map
      .call(element.attributes, function (a) {
        return a.name + "=" + a.value;
      })
      .join(" ");
  }

  // Whether `body` has a script that is neither this one nor data.
  function foreignScript(body) {
    var mine = script && script.src ? script.src.split("?")[0] : null;
    return Array.prototype.some.call(body.querySelectorAll("script"), function (node) {
      if (/json/i.test(node.type || "")) return false;
      var src = node.getAttribute("src");
      return !(src && mine && new URL(src, location.href).href.split("?")[0] === mine);
    });
  }

  function baseName(path) {
    return path.split("?")[0].split("#")[0].split("/").pop();
  }

  // Re-links the stylesheets whose file name is the changed file's (all of them when none is):
  // the new <link> goes in beside the old, which goes once the new one has loaded, so nothing flashes.
  function relink(path) {
    var links = Array.prototype.slice.call(document.querySelectorAll('link[rel~="stylesheet"][href]'));
    var name = baseName(path);
    var matching = links.filter(function (link) {
      return baseName(new URL(link.href, location.href).pathname) === name;
    });
    (matching.length ? matching : links).forEach(function (link) {
      var fresh = link.cloneNode(false);
      var href = new URL(link.href, location.href);
      href.searchParams.set("livereload", String(Date.now()));
      fresh.href = href.toString();
      var done = false;
      var drop = function () {
        if (done) return;
        done = true;
        if (link.parentNode) link.parentNode.removeChild(link);
      };
      fresh.onload = drop;
      fresh.onerror = drop;
      setTimeout(drop, 2000);
      link.parentNode.insertBefore(fresh, link.nextSibling);
    });
  }

  function showError(message) {
    hideError();
    var box = document.createElement("div");
    box.id = OVERLAY;
    box.setAttribute("role", "alert");
    box.style.cssText =
      "position:fixed;inset:0;z-index:2147483647;overflow:auto;background:rgba(20,20,20,.94);" +
      "color:#f5f5f5;font:14px/1.45 ui-monospace,Menlo,Consolas,monospace;padding:24px;box-sizing:border-box";
    var title = document.createElement("div");
    title.style.cssText = "font-size:18px;color:#ff6b6b;margin-bottom:8px";
    var what = message.target ? message.target + " did not come back" : "reload failed";
    title.textContent = "touchwire: " + what + (message.place ? " at " + message.place : "");
    var place = document.createElement("div");
    place.className = "touchwire-place";
    place.textContent = message.place || "";
    place.style.cssText = "color:#ffd166;margin-bottom:8px";
    var text = document.createElement("div");
    text.className = "touchwire-message";
    text.textContent = message.message || "";
    text.style.cssText = "margin-bottom:12px";
    var excerpt = document.createElement("pre");
    excerpt.className = "touchwire-excerpt";
    excerpt.textContent = message.excerpt || "";
    excerpt.style.cssText = "white-space:pre-wrap;margin:0;color:#ddd";
    var close = document.createElement("button");
    close.textContent = "×";
    close.title = "Hide (it comes back with the next failure)";
    close.style.cssText =
      "position:absolute;top:12px;right:16px;font-size:20px;background:none;border:0;color:#f5f5f5;cursor:pointer";
    close.onclick = hideError;
    box.appendChild(close);
    box.appendChild(title);
    if (message.place) box.appendChild(place);
    box.appendChild(text);
    if (message.excerpt) box.appendChild(excerpt);
    (document.body || document.documentElement).appendChild(box);
  }

  function hideError() {
    var box = document.getElementById(OVERLAY);
    if (box && box.parentNode) box.parentNode.removeChild(box);
  }

  connect();
})();
