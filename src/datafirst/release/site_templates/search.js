// Client-side search of the catalogue: the index is a script literal (window.DATAFIRST_SEARCH),
// since a page opened from file:// may not fetch JSON. Results are written as text, never HTML.
(function () {
  "use strict";
  var index = window.DATAFIRST_SEARCH || [];
  var words = function (s) { return (s || "").toLowerCase().split(/[^a-z0-9_]+/).filter(Boolean); };

  function score(entry, query, terms) {
    var name = entry.name.toLowerCase();
    if (name === query) return 100;
    if (name.indexOf(query) >= 0) return 50;
    var text = words(entry.text + " " + entry.name.replace(/_/g, " "));
    var hits = terms.filter(function (t) {
      return text.some(function (w) { return w === t || (t.length >= 4 && w.indexOf(t) === 0); });
    });
    return hits.length === terms.length ? 10 + hits.length : 0;
  }

  function run(q) {
    var status = document.getElementById("search-status");
    var list = document.getElementById("search-results");
    var query = (q || "").trim().toLowerCase();
    list.textContent = "";
    if (!query) { status.textContent = "Type a column name or a word of its meaning."; return; }
    var terms = words(query);
    var found = index.map(function (e) { return [score(e, query, terms), e]; })
      .filter(function (x) { return x[0] > 0; })
      .sort(function (a, b) { return b[0] - a[0] || a[1].name.localeCompare(b[1].name); });
    status.textContent = found.length + (found.length === 1 ? " result" : " results") + " for \u201c" + q.trim() + "\u201d";
    found.slice(0, 200).forEach(function (x) {
      var e = x[1];
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = e.href;
      a.textContent = e.kind === "table" ? e.name : e.table + "." + e.name;
      li.appendChild(a);
      var kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = " (" + e.kind + ")";
      li.appendChild(kind);
      if (e.text) {
        var p = document.createElement("p");
        p.textContent = e.text;
        li.appendChild(p);
      }
      list.appendChild(li);
    });
  }

  var q = new URLSearchParams(window.location.search).get("q") || "";
  var box = document.getElementById("search-query");
  box.value = q;
  document.getElementById("site-search").value = q;
  box.addEventListener("input", function () { run(box.value); });
  run(q);
})();
