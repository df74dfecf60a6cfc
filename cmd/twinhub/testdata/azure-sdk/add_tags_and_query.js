'use strict';
// The service app of Microsoft's device-twin how-to (AddTagsAndQuery.js):
// get the twin, add location tags with twin.update (If-Match: the twin's
// etag), then run the how-to's two queries concurrently with nextAsTwin.
// Env SERVICE_CONNECTION_STRING; argv[2] the device ID. Prints
// {"event":"tagged",...}, {"event":"query","name":"plant",...} and
// {"event":"query","name":"plantCellular",...}.
const iothub = require('azure-iothub');
const { emit, fail, env, watchdog } = require('./lib');

watchdog(20000, 'add tags and query');
const deviceId = process.argv[2] || 'myDeviceId';
const registry = iothub.Registry.fromConnectionString(env('SERVICE_CONNECTION_STRING'));

registry.getTwin(deviceId, (err, twin) => {
  if (err) fail('getTwin', err);
  const etagBefore = twin.etag;
  const patch = { tags: { location: { region: 'US', plant: 'Redmond43' } } };
  twin.update(patch, (err) => {
    if (err) fail('could not update twin', err);
    emit('tagged', { deviceId: twin.deviceId, etagBefore, etag: twin.etag, tags: twin.tags });
    queryTwins();
  });
});

function queryTwins() {
  let pending = 2;
  const run = (name, sql) => {
    const query = registry.createQuery(sql, 100);
    query.nextAsTwin((err, results) => {
      if (err) fail(`query ${name} (${sql})`, err);
      emit('query', { name, ids: results.map((t) => t.deviceId), hasMoreResults: query.hasMoreResults });
      if (--pending === 0) process.exit(0);
    });
  };
  run('plant', "SELECT * FROM devices WHERE tags.location.plant = 'Redmond43'");
  run('plantCellular', "SELECT * FROM devices WHERE tags.location.plant = 'Redmond43' AND properties.reported.connectivity.type = 'cellular'");
}
