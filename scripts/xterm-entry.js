// The dashboard's terminal: xterm.js 3.8 from Debian's node-xterm (CommonJS
// modules) with libjs-xterm's fit add-on, bundled for the browser by esbuild
// at build time (make dashboard) into dashboard/vendor/xterm.js.
const { Terminal } = require('/usr/share/nodejs/xterm/lib/public/Terminal.js');
require('/usr/share/javascript/xterm/addons/fit/fit.js').apply(Terminal);
window.Terminal = Terminal;
