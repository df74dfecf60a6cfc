'use strict';
// Shared by the scripts: one JSON object per stdout line for the Go test to
// read, a clear message and exit code 1 on failure, and a watchdog so that a
// hub that never answers fails the script instead of hanging it.

function emit(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, fields)) + '\n');
}

function fail(what, err) {
  const detail = err ? ` ${err.name || 'Error'}: ${err.message || err}` : '';
  process.stderr.write(`FAIL ${what}:${detail}\n`);
  process.exit(1);
}

function env(name) {
  const v = process.env[name];
  if (!v) fail(`environment variable ${name} is not set`);
  return v;
}

// watchdog exits non-zero if the script is still running after ms.
function watchdog(ms, what) {
  const t = setTimeout(() => fail(`${what}: no result after ${ms} ms (the hub did not answer)`), ms);
  t.unref();
  return t;
}

// errorInfo is what the Go test asserts on for an SDK error.
function errorInfo(err) {
  return { name: err.name, constructor: err.constructor && err.constructor.name, message: err.message,
    status: err.response && err.response.statusCode };
}

module.exports = { emit, fail, env, watchdog, errorInfo };
