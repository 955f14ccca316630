// Saved widget state, offline. Loaded after require.js and before the widget manager (embed-amd.js).
// 1. The widget manager's modules and its icon fonts resolve inside the site (_static/vendor/),
//    not against the page's folder or a CDN.
// 2. The manager typesets widget labels with MathJax 2's `MathJax.Hub.Queue`; the book loads
//    MathJax 3, so a small adapter forwards such calls to MathJax 3's typesetPromise.
(function () {
  var src = document.currentScript && document.currentScript.src;
  if (src && window.requirejs) {
    var vendor = src.slice(0, src.lastIndexOf("/") + 1) + "vendor/";
    window.requirejs.config({ baseUrl: vendor });
  }
  function adapt() {
    var mj = window.MathJax;
    if (!mj || mj.Hub || !mj.typesetPromise) return;
    mj.Hub = {
      Queue: function (job) {
        var el = Array.isArray(job) ? job[2] : null;
        if (el && mj.startup && mj.startup.promise) {
          mj.startup.promise.then(function () { return mj.typesetPromise([el]); });
        }
      },
    };
  }
  document.addEventListener("DOMContentLoaded", adapt);
})();
