'use strict';
// The back end's side of the how-to's desired-property examples: get the
// twin and update its desired properties with twin.update. Env
// SERVICE_CONNECTION_STRING; argv[2] the device ID, argv[3] the desired patch
// (JSON). Prints {"event":"updated","desiredVersion":n}.
const iothub = require('azure-iothub');
const { emit, fail, env, watchdog } = require('./lib');

watchdog(20000, 'update desired');
const registry = iothub.Registry.fromConnectionString(env('SERVICE_CONNECTION_STRING'));
const [, , deviceId, patch] = process.argv;

registry.getTwin(deviceId, (err, twin) => {
  if (err) fail('getTwin', err);
  twin.update({ properties: { desired: JSON.parse(patch) } }, (err) => {
    if (err) fail('could not update twin', err);
    emit('updated', { desiredVersion: twin.properties.desired.$version });
    process.exit(0);
  });
});
