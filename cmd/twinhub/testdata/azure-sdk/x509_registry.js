'use strict';
// X.509 devices through the service SDK's registry: argv[2] is created with
// only x509Thumbprint.primaryThumbprint = argv[4] (the SDK adds type
// "selfSigned"), argv[3] with type "certificateAuthority". Then argv[2] is
// read, given secondaryThumbprint argv[5], and written back with
// registry.update (the SDK's read-modify-write), and a device with a
// malformed thumbprint is refused. Env SERVICE_CONNECTION_STRING. Prints
// {"event":"created",...} twice, {"event":"updated",...} and
// {"event":"badThumbprint",...}.
const iothub = require('azure-iothub');
const { emit, fail, env, watchdog, errorInfo } = require('./lib');

watchdog(20000, 'x509 registry');
const registry = iothub.Registry.fromConnectionString(env('SERVICE_CONNECTION_STRING'));
const [, , selfId, caId, primary, secondary] = process.argv;

async function main() {
  for (const info of [
    { deviceId: selfId, authentication: { x509Thumbprint: { primaryThumbprint: primary } } },
    { deviceId: caId, authentication: { type: 'certificateAuthority' } },
  ]) {
    try {
      const res = await registry.create(info);
      emit('created', { device: res.responseBody });
    } catch (err) {
      fail(`registry.create(${JSON.stringify(info)})`, err);
    }
  }
  try {
    const device = (await registry.get(selfId)).responseBody;
    device.authentication.x509Thumbprint.secondaryThumbprint = secondary;
    const res = await registry.update(device);
    emit('updated', { device: res.responseBody });
  } catch (err) {
    fail(`registry.update(${selfId})`, err);
  }
  try {
    await registry.create({ deviceId: 'sdkBadThumbprint', authentication: { x509Thumbprint: { primaryThumbprint: 'not-a-thumbprint' } } });
    fail('a malformed thumbprint was accepted');
  } catch (err) {
    emit('badThumbprint', { error: errorInfo(err) });
  }
}
main().then(() => process.exit(0), (err) => fail('x509 registry', err));
