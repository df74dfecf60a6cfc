'use strict';
// registry.create with empty keys: argv[2] is created without an
// authentication section (the SDK sends empty symmetric keys), argv[3] with
// explicitly empty keys. The hub must generate keys and return them.
// Creating argv[2] again must fail with DeviceAlreadyExistsError, and
// getTwin of an unknown device with DeviceNotFoundError. Env
// SERVICE_CONNECTION_STRING. Prints {"event":"created",...} twice,
// {"event":"fetched",...}, {"event":"createAgain",...} and {"event":"notFound",...}.
const iothub = require('azure-iothub');
const { emit, fail, env, watchdog, errorInfo } = require('./lib');

watchdog(20000, 'create devices');
const registry = iothub.Registry.fromConnectionString(env('SERVICE_CONNECTION_STRING'));
const [, , implicitId, explicitId] = process.argv;

async function main() {
  const devices = [
    { deviceId: implicitId },
    { deviceId: explicitId, status: 'enabled', authentication: { symmetricKey: { primaryKey: '', secondaryKey: '' } } },
  ];
  for (const info of devices) {
    let res;
    try {
      res = await registry.create(info);
    } catch (err) {
      fail(`registry.create(${JSON.stringify(info)})`, err);
    }
    emit('created', { device: res.responseBody, status: res.httpResponse.statusCode });
  }
  try {
    const res = await registry.get(implicitId);
    emit('fetched', { device: res.responseBody });
  } catch (err) {
    fail(`registry.get(${implicitId})`, err);
  }
  try {
    await registry.create({ deviceId: implicitId });
    fail(`creating ${implicitId} a second time succeeded`);
  } catch (err) {
    emit('createAgain', { error: errorInfo(err) });
  }
  try {
    await registry.getTwin('sdkNoSuchDevice');
    fail('getTwin of a device that does not exist succeeded');
  } catch (err) {
    emit('notFound', { error: errorInfo(err) });
  }
}
main().then(() => process.exit(0), (err) => fail('create devices', err));
