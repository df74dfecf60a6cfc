'use strict';
// Optimistic concurrency: a Twin object read before another writer changed
// the twin holds a stale etag, and its update must fail with
// InvalidEtagError (HTTP 412); updates with the current etag and with "*"
// succeed. Env SERVICE_CONNECTION_STRING; argv[2] the device ID. Prints
// {"event":"read"}, {"event":"updated"}, {"event":"stale"}, {"event":"wildcard"}.
const iothub = require('azure-iothub');
const { emit, fail, env, watchdog, errorInfo } = require('./lib');

watchdog(20000, 'stale etag');
const registry = iothub.Registry.fromConnectionString(env('SERVICE_CONNECTION_STRING'));
const deviceId = process.argv[2];

async function main() {
  const { responseBody: stale } = await registry.getTwin(deviceId);
  emit('read', { etag: stale.etag });
  // Another writer, with the etag it read: succeeds and changes the etag.
  const { responseBody: fresh } = await registry.updateTwin(deviceId, { tags: { owner: 'first' } }, stale.etag);
  emit('updated', { etag: fresh.etag, tags: fresh.tags });
  try {
    await stale.update({ tags: { owner: 'stale' } });
    fail('an update with a stale etag succeeded');
  } catch (err) {
    emit('stale', { error: errorInfo(err) });
  }
  const { responseBody: forced } = await registry.updateTwin(deviceId, { tags: { owner: 'wildcard' } }, '*');
  emit('wildcard', { etag: forced.etag, tags: forced.tags });
}
main().then(() => process.exit(0), (err) => fail('stale etag', err));
