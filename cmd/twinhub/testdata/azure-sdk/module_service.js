'use strict';
// The back end's module calls with the unmodified azure-iothub Registry.
// Env SERVICE_CONNECTION_STRING; argv[2] the operation, argv[3] the device
// ID, argv[4] the module ID, then the operation's arguments:
//   add                      registry.addModule       → {"event":"added","module":…}
//   list                     registry.getModulesOnDevice → {"event":"list","moduleIds":[…]}
//   twin                     registry.getModuleTwin   → {"event":"twin","twin":…}
//   update <patch> <etag>    registry.updateModuleTwin, etag "read" reads the twin first
//                                                     → {"event":"updated","twin":…}
//   query <sql>              registry.createQuery(sql).nextAsTwin → {"event":"query","twins":[…]}
//   remove                   registry.removeModule    → {"event":"removed"}
const iothub = require('azure-iothub');
const { emit, fail, env, watchdog } = require('./lib');

watchdog(20000, 'module service call');
const registry = iothub.Registry.fromConnectionString(env('SERVICE_CONNECTION_STRING'));
const [, , op, deviceId, moduleId, arg1, arg2] = process.argv;

// plain is a twin as JSON, without the SDK's methods.
const plain = (twin) => JSON.parse(JSON.stringify({ deviceId: twin.deviceId, moduleId: twin.moduleId, etag: twin.etag,
  version: twin.version, tags: twin.tags, properties: twin.properties }));

async function main() {
  switch (op) {
    case 'add': {
      const { responseBody } = await registry.addModule({ deviceId, moduleId });
      emit('added', { module: responseBody });
      break;
    }
    case 'list': {
      const { responseBody } = await registry.getModulesOnDevice(deviceId);
      emit('list', { moduleIds: responseBody.map((m) => m.moduleId), deviceIds: responseBody.map((m) => m.deviceId) });
      break;
    }
    case 'twin': {
      const { responseBody } = await registry.getModuleTwin(deviceId, moduleId);
      emit('twin', { twin: plain(responseBody) });
      break;
    }
    case 'update': {
      let etag = arg2;
      if (etag === 'read') etag = (await registry.getModuleTwin(deviceId, moduleId)).responseBody.etag;
      const { responseBody } = await registry.updateModuleTwin(deviceId, moduleId, JSON.parse(arg1), etag);
      emit('updated', { twin: plain(responseBody) });
      break;
    }
    case 'query': {
      const query = registry.createQuery(arg1);
      const { result } = await query.nextAsTwin();
      emit('query', { twins: result.map(plain) });
      break;
    }
    case 'remove': {
      await registry.removeModule(deviceId, moduleId);
      emit('removed', {});
      break;
    }
    default:
      fail(`unknown operation ${op}`);
  }
}
main().then(() => process.exit(0), (err) => fail(`${op} ${deviceId}/${moduleId}`, err));
