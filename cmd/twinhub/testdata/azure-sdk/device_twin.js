'use strict';
// A device (or a module: a connection string with ModuleId, opened with
// ModuleClient) that keeps its twin open and shows the SDK's cached copy of
// it (twin.properties) after every change. Env DEVICE_CONNECTION_STRING and
// TRANSPORT: "Mqtt" (MQTT over TLS) or "MqttWs" (MQTT over WebSockets,
// wss://{host}:443/$iothub/websocket). An X.509 device (connection string
// with x509=true) also gets X509_CERT and X509_KEY, PEM files that
// client.setOptions({cert, key}) hands the SDK. It runs until told to stop.
//
// stdout, one JSON object per line:
//   {"event":"ready","desired":…,"reported":…}    twin read, desired listener subscribed
//   {"event":"desired","value":…,"desired":…}     a desired notification and the cache after it
//   {"event":"reported","reported":…}             a reported update was accepted
//   {"event":"error",…}
// stdin, one command per line:
//   report <json>   update the reported properties
//   exit            close the client and exit 0
const readline = require('readline');
const { Client, ModuleClient } = require('azure-iot-device');
const transports = require('azure-iot-device-mqtt');
const { emit, fail, env, errorInfo } = require('./lib');

const Protocol = transports[env('TRANSPORT')];
if (!Protocol) fail(`unknown TRANSPORT ${process.env.TRANSPORT}`);
const connectionString = env('DEVICE_CONNECTION_STRING');
const client = (/(^|;)ModuleId=/.test(connectionString) ? ModuleClient : Client).fromConnectionString(connectionString, Protocol);
client.on('error', (err) => emit('error', { error: errorInfo(err) }));

// cached is the SDK's cached section, as JSON (without the update function).
const cached = (section) => JSON.parse(JSON.stringify(section));

const open = setTimeout(() => fail('open and get twin: no result after 20000 ms'), 20000);
if (process.env.X509_CERT) {
  const fs = require('fs');
  const x509 = { cert: fs.readFileSync(env('X509_CERT'), 'utf8'), key: fs.readFileSync(env('X509_KEY'), 'utf8') };
  client.setOptions(x509, (err) => {
    if (err) fail('setting the x509 options', err);
    start();
  });
} else {
  start();
}

function start() {
  client.open((err) => {
    if (err) fail('could not open IotHub client', err);
    client.getTwin((err, twin) => {
      if (err) fail('could not get twin', err);
      let replayed = false; // attaching the listener replays the cache once
      twin.on('properties.desired', (value) => {
        if (!replayed) {
          replayed = true;
          return;
        }
        emit('desired', { value, desired: cached(twin.properties.desired) });
      });
      twin.on('error', (err) => emit('error', { error: errorInfo(err) }));
      twin.enableTwinDesiredPropertiesUpdates((err) => {
        if (err) fail('subscribing to desired properties', err);
        clearTimeout(open);
        emit('ready', { desired: cached(twin.properties.desired), reported: cached(twin.properties.reported) });
        commands(twin);
      });
    });
  });
}

function commands(twin) {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const [cmd, ...rest] = line.trim().split(' ');
    switch (cmd) {
      case 'report':
        twin.properties.reported.update(JSON.parse(rest.join(' ')), (err) => {
          if (err) fail('reporting', err);
          emit('reported', { reported: cached(twin.properties.reported) });
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
