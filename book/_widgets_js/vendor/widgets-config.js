// Serve the widget manager from the book itself (readers offline and CI have no CDN).
var base = new URL('.', document.currentScript.src).href;
require.config({
  paths: {
    '@jupyter-widgets/html-manager/dist': base + 'html-manager',
    '@jupyter-widgets': base + 'html-manager'
  }
});
