'use strict';
// The back end updates a twin with registry.updateTwin. Env
// SERVICE_CONNECTION_STRING; argv[2] the device ID, argv[3] the patch (JSON,
// e.g. {"properties":{"desired":null}}), argv[4] the etag to send: "read"
// reads the twin first and sends its etag, anything else (e.g. "*") is sent
// as it is. Prints {"event":"updated","etagSent":…,"etag":…,"version":n,
// "tags":…,"desired":…} from the twin the hub returned.
const iothub = require('azure-iothub');
const { emit, fail, env, watchdog } = require('./lib');

watchdog(20000, 'update twin');
const registry = iothub.Registry.fromConnectionString(env('SERVICE_CONNECTION_STRING'));
const [, , deviceId, patch, etagArg] = process.argv;

async function main() {
  let etag = etagArg;
  if (etag === 'read') {
    const { responseBody: twin } = await registry.getTwin(deviceId);
    etag = twin.etag;
  }
  const { responseBody: twin } = await registry.updateTwin(deviceId, JSON.parse(patch), etag);
  emit('updated', { etagSent: etag, etag: twin.etag, version: twin.version, tags: twin.tags === undefined ? null : twin.tags,
    desired: twin.properties.desired });
}
main().then(() => process.exit(0), (err) => fail('updateTwin', err));
