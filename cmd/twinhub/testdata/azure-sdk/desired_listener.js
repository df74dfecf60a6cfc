'use strict';
// A device that listens for desired-property changes the way the how-to
// shows: on 'properties.desired' (every patch), on a subtree
// ('properties.desired.climate') and on a leaf
// ('properties.desired.climate.hvac.systemControl'). It runs until told to
// stop. Env DEVICE_CONNECTION_STRING.
//
// stdout, one JSON object per line:
//   {"event":"ready","desiredVersion":n}      listeners attached and the desired topic subscribed
//   {"event":"desired","name":"properties.desired[.path]","value":…}
//   {"event":"connect"} / {"event":"disconnect",…} / {"event":"error",…}
//   {"event":"reopened"}                      after a "reopen" command
// stdin, one command per line:
//   reopen   close the client's transport and open it again (same Client and Twin objects)
//   exit     close the client and exit 0
const readline = require('readline');
const Client = require('azure-iot-device').Client;
const Protocol = require('azure-iot-device-mqtt').Mqtt;
const { emit, fail, env, errorInfo } = require('./lib');

const client = Client.fromConnectionString(env('DEVICE_CONNECTION_STRING'), Protocol);
client.on('connect', () => emit('connect'));
client.on('disconnect', (res) => emit('disconnect', { reason: String(res && (res.reason || res.transportObj) || '') }));
client.on('error', (err) => emit('error', { error: errorInfo(err) }));

const open = setTimeout(() => fail('open and get twin: no result after 20000 ms'), 20000);
client.open((err) => {
  if (err) fail('could not open IotHub client', err);
  client.getTwin((err, twin) => {
    if (err) fail('could not get twin', err);
    for (const name of ['properties.desired', 'properties.desired.climate', 'properties.desired.climate.hvac.systemControl']) {
      twin.on(name, (value) => emit('desired', { name, value }));
    }
    twin.on('error', (err) => emit('error', { error: errorInfo(err) }));
    // Attaching the first listener made the SDK subscribe to the desired
    // topic; this call only waits for that SUBACK (it sends nothing more),
    // so that "ready" means a real hub would now deliver.
    twin.enableTwinDesiredPropertiesUpdates((err) => {
      if (err) fail('subscribing to desired properties', err);
      clearTimeout(open);
      emit('ready', { desiredVersion: twin.properties.desired.$version });
      commands();
    });
  });
});

function commands() {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    switch (line.trim()) {
      case 'reopen':
        client.close((err) => {
          if (err) fail('closing the client', err);
          emit('closed');
          client.open((err) => {
            if (err) fail('reopening the client', err);
            emit('reopened');
          });
        });
        break;
      case 'exit':
        client.close(() => process.exit(0));
        break;
      default:
        fail(`unknown command ${JSON.stringify(line)}`);
    }
  });
  rl.on('close', () => process.exit(0));
}
