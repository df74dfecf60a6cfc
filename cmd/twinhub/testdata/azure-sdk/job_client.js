'use strict';
// Twin-update jobs with the unmodified azure-iothub JobClient. Env
// SERVICE_CONNECTION_STRING; argv[2] the operation:
//   schedule <jobId> <queryCondition> <patch> [<startInSeconds>]
//            jobClient.scheduleTwinUpdate → {"event":"scheduled","job":…}
//   get <jobId>     jobClient.getJob     → {"event":"job","job":…}
//   cancel <jobId>  jobClient.cancelJob  → {"event":"cancelled","job":…}
//   query           jobClient.createQuery('scheduleUpdateTwin').next → {"event":"jobs","jobs":[…]}
const iothub = require('azure-iothub');
const { emit, fail, env, watchdog } = require('./lib');

watchdog(20000, 'job client call');
const jobs = iothub.JobClient.fromConnectionString(env('SERVICE_CONNECTION_STRING'));
const [, , op, jobId, condition, patch, startIn] = process.argv;

async function main() {
  switch (op) {
    case 'schedule': {
      const start = new Date(Date.now() + 1000 * Number(startIn || 0));
      const { jobStatus: job } = await jobs.scheduleTwinUpdate(jobId, condition, JSON.parse(patch), start, 300);
      emit('scheduled', { job });
      break;
    }
    case 'get':
      emit('job', { job: (await jobs.getJob(jobId)).jobStatus });
      break;
    case 'cancel':
      emit('cancelled', { job: (await jobs.cancelJob(jobId)).jobStatus });
      break;
    case 'query': {
      const query = jobs.createQuery('scheduleUpdateTwin');
      const { result } = await query.next();
      emit('jobs', { jobs: result });
      break;
    }
    default:
      fail(`unknown operation ${op}`);
  }
}
main().then(() => process.exit(0), (err) => fail(`${op} ${jobId || ''}`, err));
