// Boots the vendored GraphiQL with the server's saved example queries (read from a JSON script tag, so the page
// needs no inline script and can keep a strict Content-Security-Policy).
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("graphiql-config").textContent);
  var params = new URLSearchParams(window.location.search);
  var tabs = config.examples.map(function (ex) {
    return { query: ex.query, variables: ex.variables, headers: config.headers };
  });
  var wanted = params.get("example");
  var storage;
  if (wanted !== null) {
    // A link to one example opens it first, ignoring tabs remembered from earlier visits.
    var i = config.examples.findIndex(function (ex) { return ex.name === wanted; });
    if (i > 0) { tabs.unshift(tabs.splice(i, 1)[0]); }
    var mem = {};
    storage = {
      getItem: function (k) { return Object.prototype.hasOwnProperty.call(mem, k) ? mem[k] : null; },
      setItem: function (k, v) { mem[k] = String(v); },
      removeItem: function (k) { delete mem[k]; },
      clear: function () { mem = {}; },
      get length() { return Object.keys(mem).length; },
    };
  }
  var fetcher = GraphiQL.createFetcher({ url: config.endpoint });
  var props = {
    fetcher: fetcher,
    defaultTabs: tabs,
    defaultEditorToolsVisibility: true,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: false,
  };
  if (storage) { props.storage = storage; }
  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(GraphiQL, props));
  if (params.get("run") === "1") {
    // ?run=1 runs the opened example once the editor is ready (shareable links, and the headless browser check).
    var tries = 0;
    var timer = setInterval(function () {
      var button = document.querySelector(".graphiql-execute-button");
      var editor = document.querySelector(".graphiql-query-editor .CodeMirror");
      tries += 1;
      if ((button && editor) || tries > 200) {
        clearInterval(timer);
        if (button) { button.click(); }
      }
    }, 50);
  }
})();
