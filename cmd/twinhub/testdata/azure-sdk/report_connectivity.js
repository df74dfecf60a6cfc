'use strict';
// The device app of Microsoft's device-twin how-to (ReportConnectivity.js):
// open, get the twin, report {"connectivity":{"type":"cellular"}}, exit.
// Env DEVICE_CONNECTION_STRING. Prints {"event":"twin",...} and
// {"event":"reported",...}.
const Client = require('azure-iot-device').Client;
const Protocol = require('azure-iot-device-mqtt').Mqtt;
const { emit, fail, env, watchdog } = require('./lib');

watchdog(20000, 'report connectivity');
const client = Client.fromConnectionString(env('DEVICE_CONNECTION_STRING'), Protocol);
client.open((err) => {
  if (err) fail('could not open IotHub client', err);
  client.getTwin((err, twin) => {
    if (err) fail('could not get twin', err);
    emit('twin', { desired: twin.properties.desired, reported: stripUpdate(twin.properties.reported) });
    const patch = { connectivity: { type: 'cellular' } };
    twin.properties.reported.update(patch, (err) => {
      if (err) fail('could not update twin', err);
      emit('reported', { patch, reported: stripUpdate(twin.properties.reported) });
      client.close(() => process.exit(0));
    });
  });
});

// The SDK keeps an update function on the reported object.
function stripUpdate(reported) {
  const copy = Object.assign({}, reported);
  delete copy.update;
  return copy;
}
