'use strict';
// Query paging: argv[2] the query, argv[3] the page size. Reads pages with
// nextAsTwin until hasMoreResults is false (at most 50 pages, so a hub that
// never ends the paging fails instead of looping). Env
// SERVICE_CONNECTION_STRING. Prints {"event":"page",...} per page.
const iothub = require('azure-iothub');
const { emit, fail, env, watchdog } = require('./lib');

watchdog(20000, 'query paging');
const registry = iothub.Registry.fromConnectionString(env('SERVICE_CONNECTION_STRING'));
const [, , sql, pageSize] = process.argv;

async function main() {
  const query = registry.createQuery(sql, Number(pageSize));
  for (let page = 1; ; page++) {
    if (page > 50) fail(`query "${sql}" still has more results after 50 pages`);
    const { result } = await query.nextAsTwin();
    emit('page', { page, ids: result.map((t) => t.deviceId), hasMoreResults: query.hasMoreResults,
      continuationToken: query.continuationToken === undefined ? null : query.continuationToken });
    if (!query.hasMoreResults) return;
  }
}
main().then(() => process.exit(0), (err) => fail(`query "${sql}"`, err));
