'use strict';
// kafkajs consumer-group scenario for compat/tests/test_groups.py; prints one JSON object
// on the last stdout line.
//
//   node groups.js BOOTSTRAP consume TOPIC GROUP COUNT
//
// A group consumer reads COUNT records (manual commits of each partition's next offset),
// waits a little for unexpected extra records, then the admin client reads the committed
// offsets, describes and lists the group (while the member is there and after it left).
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, scenario, topic, groupId, countStr] = process.argv.slice(2);
const kafka = new Kafka({
  clientId: 'compat-kafkajs-groups',
  brokers: [bootstrap],
  logLevel: logLevel.NOTHING,
  connectionTimeout: 5000,
  requestTimeout: 15000,
  retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000 },
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function consume() {
  const count = Number(countStr);
  const consumer = kafka.consumer({ groupId, sessionTimeout: 6000, heartbeatInterval: 500, maxWaitTimeInMs: 100, rebalanceTimeout: 10000 });
  const admin = kafka.admin();
  await admin.connect();
  const records = [];
  const next = {};
  const assigned = new Set();
  let resolveDone;
  const done = new Promise((r) => { resolveDone = r; });
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    for (const ps of Object.values(e.payload.memberAssignment)) for (const p of ps) assigned.add(p);
  });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      records.push([partition, message.offset, message.key && message.key.toString(), message.value && message.value.toString()]);
      next[partition] = (BigInt(message.offset) + 1n).toString();
      await consumer.commitOffsets([{ topic, partition, offset: next[partition] }]);
      if (records.length >= count) resolveDone();
    },
  });
  const timer = setTimeout(resolveDone, 60000);
  await done;
  clearTimeout(timer);
  await sleep(1000);   // anything more would be a duplicate or a stray record
  const extra = records.length - count;
  const fetchedWhileMember = await admin.fetchOffsets({ groupId, topics: [topic] });
  const fetched = {};
  for (const t of fetchedWhileMember) for (const p of t.partitions) fetched[p.partition] = p.offset;
  const d1 = (await admin.describeGroups([groupId])).groups[0];
  await consumer.disconnect();
  await sleep(500);
  const d2 = (await admin.describeGroups([groupId])).groups[0];
  const listed = (await admin.listGroups()).groups.filter((g) => g.groupId === groupId).map((g) => [g.groupId, g.protocolType]);
  await admin.disconnect();
  return {
    records: records.slice(0, count),
    extra,
    assigned: [...assigned],
    fetched,
    described: { state: d1.state, members: d1.members.length, protocol: d1.protocol, protocolType: d1.protocolType },
    described_after: { state: d2.state, members: d2.members.length, protocolType: d2.protocolType },
    listed: listed[0] || null,
  };
}

(async () => {
  let out;
  if (scenario === 'consume') out = await consume();
  else throw new Error(`unknown scenario ${scenario}`);
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
