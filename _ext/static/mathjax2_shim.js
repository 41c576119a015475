// The widget manager typesets widget labels with MathJax 2's MathJax.Hub.Queue(["Typeset", hub, element]);
// the book loads MathJax 3, which has MathJax.typesetPromise instead. Answer the old call with the new one.
(function () {
  if (window.MathJax && !window.MathJax.Hub) {
    window.MathJax.Hub = {
      Queue: function (job) {
        var element = Array.isArray(job) ? job[2] : undefined;
        if (window.MathJax.typesetPromise) {
          window.MathJax.typesetPromise(element ? [element] : undefined).catch(function () {});
        }
      },
    };
  }
})();
