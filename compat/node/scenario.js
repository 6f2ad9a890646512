'use strict';
// Runs one compat scenario with kafkajs against a broker and prints what it observed as
// one JSON object on the last stdout line; compat/tests/test_kafkajs.py asserts on it.
//
//   node scenario.js BOOTSTRAP SCENARIO TOPIC [ARGS...]
//
// kafkajs has no group-less consumer, so these scenarios produce and use the admin
// client (offsets, configs, topics); consumption is checked by the pytest side with
// another client.
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const [bootstrap, scenario, topic, ...args] = process.argv.slice(2);
const kafka = new Kafka({
  clientId: 'compat-kafkajs',
  brokers: [bootstrap],
  logLevel: logLevel.NOTHING,
  connectionTimeout: 5000,
  requestTimeout: 15000,
  retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
});

function errInfo(e) {
  if (!e) return null;
  return { type: e.type || null, name: e.name, retriable: !!e.retriable };
}

async function waitTopic(admin, t, partitions) {
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    try {
      const md = await admin.fetchTopicMetadata({ topics: [t] });
      const ps = md.topics[0].partitions;
      if (ps.length === partitions && ps.every((p) => p.leader >= 0)) return;
    } catch (e) {
      // not there yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`topic ${t} not ready`);
}

function byPartition(offsets) {
  const o = {};
  for (const x of offsets) o[x.partition] = x;
  return o;
}

// produce CODEC ACKS PARTITIONS COUNT: record i has key "js<i>" (null when i%6==0),
// value "kafkajs-<codec>-<i>" (null when i%10==3), header idx=<i>, partition i%PARTITIONS;
// sent in batches of 25 records per send() call.
async function produce() {
  const [codecName, acksStr, partsStr, countStr] = args;
  const parts = Number(partsStr);
  const count = Number(countStr);
  const codec = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP }[codecName];
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: parts, replicationFactor: 1 }], waitForLeaders: true });
  await waitTopic(admin, topic, parts);
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const produced = [];
  for (let start = 0; start < count; start += 25) {
    const messages = [];
    for (let i = start; i < Math.min(count, start + 25); i++) {
      messages.push({
        key: i % 6 === 0 ? null : `js${i}`,
        value: i % 10 === 3 ? null : `kafkajs-${codecName}-${i}`,
        partition: i % parts,
        headers: { idx: String(i) },
      });
    }
    const res = await producer.send({ topic, messages, acks: Number(acksStr), compression: codec, timeout: 15000 });
    for (const r of res) produced.push({ partition: r.partition, error: r.errorCode, base_offset: r.baseOffset === undefined ? null : r.baseOffset });
  }
  await producer.disconnect();
  const offsets = byPartition(await admin.fetchTopicOffsets(topic));
  await admin.disconnect();
  const o = {};
  for (const [p, x] of Object.entries(offsets)) o[p] = [x.low, x.high];
  return { produced, offsets: o };
}

// admin: topics, configs, partitions, offsets by timestamp, delete records, cluster.
async function adminScenario() {
  const out = {};
  const admin = kafka.admin();
  await admin.connect();
  out.created = await admin.createTopics({
    topics: [{ topic, numPartitions: 2, replicationFactor: 1,
               configEntries: [{ name: 'retention.ms', value: '7777777' }, { name: 'segment.bytes', value: '2097152' }] }],
    waitForLeaders: true,
  });
  await waitTopic(admin, topic, 2);
  try {
    // kafkajs swallows TOPIC_ALREADY_EXISTS and returns false
    const again = await admin.createTopics({ topics: [{ topic, numPartitions: 2, replicationFactor: 1 }], waitForLeaders: false });
    out.create_again = 'returned';
    out.create_again_value = again;
  } catch (e) {
    out.create_again = errInfo(e);
  }
  const cfgNames = ['retention.ms', 'segment.bytes', 'cleanup.policy', 'max.message.bytes', 'retention.bytes'];
  const describe = async () => {
    const d = await admin.describeConfigs({ resources: [{ type: 2, name: topic, configNames: cfgNames }], includeSynonyms: false });
    const r = d.resources[0];
    const m = { _error: r.errorCode };
    for (const e of r.configEntries) m[e.configName] = [e.configValue, e.isDefault, e.readOnly];
    return m;
  };
  out.configs_created = await describe();
  // Legacy AlterConfigs: the given set replaces all topic overrides.
  const alt = await admin.alterConfigs({ validateOnly: false, resources: [{ type: 2, name: topic, configEntries: [{ name: 'retention.bytes', value: '5000000' }] }] });
  out.alter = alt.resources.map((r) => [r.errorCode, r.resourceName]);
  out.configs_altered = await describe();

  await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] });
  await waitTopic(admin, topic, 3);
  try {
    await admin.createPartitions({ topicPartitions: [{ topic, count: 1 }] });
    out.shrink = null;
  } catch (e) {
    out.shrink = errInfo(e);
  }
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  out.metadata = md.topics[0].partitions
    .map((p) => [p.partitionId, p.leader, p.replicas, p.isr, p.partitionErrorCode])
    .sort((a, b) => a[0] - b[0]);

  const base = 1400000000000;
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 20; i++) {
    messages.push({ value: `t${i}`, partition: 2, timestamp: String(base + i * 1000) });
  }
  const sent = await producer.send({ topic, messages, acks: -1 });
  out.sent = sent.map((r) => [r.partition, r.errorCode, r.baseOffset]);
  await producer.disconnect();

  const pick = (arr) => { const o = {}; for (const x of arr) o[x.partition] = x.offset; return o; };
  out.offsets = (await admin.fetchTopicOffsets(topic)).map((x) => [x.partition, x.low, x.high, x.offset]).sort((a, b) => a[0] - b[0]);
  out.by_ts = pick(await admin.fetchTopicOffsetsByTimestamp(topic, base + 4500));
  out.by_ts_future = pick(await admin.fetchTopicOffsetsByTimestamp(topic, base + 10000000));
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 2, offset: '12' }] });
  out.offsets_after_delete = (await admin.fetchTopicOffsets(topic)).map((x) => [x.partition, x.low, x.high]).sort((a, b) => a[0] - b[0]);

  const cl = await admin.describeCluster();
  out.cluster = { brokers: cl.brokers.map((b) => [b.nodeId, b.host, b.port]), controller: cl.controller, has_id: !!cl.clusterId };
  out.listed = (await admin.listTopics()).includes(topic);
  await admin.deleteTopics({ topics: [topic], timeout: 15000 });
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline && (await admin.listTopics()).includes(topic)) {
    await new Promise((r) => setTimeout(r, 100));
  }
  out.listed_after_delete = (await admin.listTopics()).includes(topic);
  await admin.disconnect();
  return out;
}

async function main() {
  const timer = setTimeout(() => { console.error('scenario timed out'); process.exit(3); }, 90000);
  let out;
  if (scenario === 'produce') out = await produce();
  else if (scenario === 'admin') out = await adminScenario();
  else throw new Error(`unknown scenario ${scenario}`);
  clearTimeout(timer);
  console.log(JSON.stringify(out));
}

main().then(() => process.exit(0), (e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
