// Sprout's JavaScript context: runs each request's code in one persistent
// V8 context, so what a call declares is there for the next, as in a
// notebook. Requests come on stdin, one JSON object a line:
//   {code, set: {VAR: value}, call: {VAR: value}, marker}
// `set` are the sandbox's variables (kept), `call` the call's own (put back
// afterwards). The result (the value of the last expression, shown as Node's
// REPL shows it) and any error go to the descriptor $SPROUT_JS_FD as JSON
// lines, then {"type":"done"}; then the marker and a newline are written to
// stdout and stderr, so the server knows where this call's output ends.
'use strict';
const fs = require('fs');
const Module = require('module');
const readline = require('readline');
const util = require('util');
const vm = require('vm');

const events = Number(process.env.SPROUT_JS_FD);
delete process.env.SPROUT_JS_FD;

function report(event) {
    fs.writeSync(events, JSON.stringify(event) + '\n');
}

// What code in the context sees as its globals; `require` resolves from the
// working directory, as in a script there.
const globals = {
    require: Module.createRequire(process.cwd() + '/'),
    console, process, Buffer, URL, URLSearchParams, TextEncoder, TextDecoder, AbortController,
    setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate, queueMicrotask,
    fetch: globalThis.fetch, structuredClone: globalThis.structuredClone,
};
globals.global = globals;
globals.globalThis = globals;
const context = vm.createContext(globals);

let interrupt = null;
process.on('SIGINT', () => { if (interrupt) interrupt(); });

function describe(error) {
    if (error instanceof Error || (error && typeof error === 'object' && 'message' in error)) {
        return { name: error.name || 'Error', value: String(error.message), traceback: String(error.stack || error.message) };
    }
    return { name: 'Error', value: util.inspect(error), traceback: util.inspect(error) };
}

// Debian's acorn (a dependency of its nodejs), to find a cell's last expression.
let acorn = null;
try { acorn = require('acorn'); } catch (error) { acorn = null; }

// The body of an async function that runs `code` and returns its last
// expression's value (what `await` at the top level needs; declarations
// in such a cell stay inside it).
function asyncBody(code) {
    if (acorn) {
        try {
            const body = acorn.parse(code, { ecmaVersion: 'latest', allowAwaitOutsideFunction: true }).body;
            const last = body[body.length - 1];
            if (last && last.type === 'ExpressionStatement') {
                return code.slice(0, last.start) + 'return (' + code.slice(last.expression.start, last.expression.end) + ');' + code.slice(last.end);
            }
        } catch (error) { /* the code's own error shows when it runs */ }
    }
    return code;
}

async function evaluate(code) {
    let value;
    try {
        value = vm.runInContext(code, context, { filename: 'cell.js', breakOnSigint: true });
    } catch (error) {
        // (The error is the context's own: not an instance of this realm's SyntaxError.)
        if (!(error && error.name === 'SyntaxError' && /await is only valid/.test(error.message))) throw error;
        value = vm.runInContext('(async () => {\n' + asyncBody(code) + '\n})()', context, { filename: 'cell.js', breakOnSigint: true });
    }
    if (value && typeof value.then === 'function') {
        value = await Promise.race([value, new Promise((_, reject) => {
            interrupt = () => reject(Object.assign(new Error('Script execution was interrupted'), { name: 'KeyboardInterrupt' }));
        })]);
    }
    return value;
}

async function handle(request) {
    Object.assign(process.env, request.set || {});
    const call = request.call || {};
    const saved = {};
    for (const key of Object.keys(call)) {
        saved[key] = Object.prototype.hasOwnProperty.call(process.env, key) ? process.env[key] : undefined;
        process.env[key] = call[key];
    }
    try {
        const value = await evaluate(String(request.code));
        if (value !== undefined) report({ type: 'result', text: util.inspect(value, { depth: 6 }) });
    } catch (error) {
        report(Object.assign({ type: 'error' }, describe(error)));
    } finally {
        interrupt = null;
        for (const [key, value] of Object.entries(saved)) {
            if (value === undefined) delete process.env[key]; else process.env[key] = value;
        }
    }
    report({ type: 'done' });
    // After everything the code printed (writes to a pipe are asynchronous).
    await new Promise((resolve) => process.stdout.write(request.marker + '0\n', resolve));
    await new Promise((resolve) => process.stderr.write(request.marker + '0\n', resolve));
}

const lines = readline.createInterface({ input: process.stdin, terminal: false });
let queue = Promise.resolve();
lines.on('line', (line) => {
    let request;
    try {
        request = JSON.parse(line);
    } catch (error) {
        return;
    }
    queue = queue.then(() => handle(request));
});
lines.on('close', () => queue.then(() => process.exit(0)));
