package dev.spate.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Runs one compat scenario with the Java kafka-clients against a broker and prints what
 * it observed as one JSON object on the last stdout line; compat/tests/test_java.py
 * asserts on it.
 *
 * <pre>java -jar spate-compat-java.jar BOOTSTRAP SCENARIO TOPIC [ARGS...]</pre>
 */
public final class Scenario {
    private static final long TIMEOUT_S = 30;

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: Scenario BOOTSTRAP SCENARIO TOPIC [ARGS...]");
            System.exit(2);
        }
        String bootstrap = args[0];
        String scenario = args[1];
        String topic = args[2];
        String[] rest = Arrays.copyOfRange(args, 3, args.length);
        Map<String, Object> out;
        switch (scenario) {
            case "produce": out = produce(bootstrap, topic, rest); break;
            case "keyed": out = keyed(bootstrap, topic, rest); break;
            case "too-large": out = tooLarge(bootstrap, topic); break;
            case "admin": out = admin(bootstrap, topic); break;
            case "ride-through": out = rideThrough(bootstrap, topic, rest); break;
            case "topic-ids": out = topicIds(bootstrap, topic); break;
            case "acked-lines": out = ackedLines(bootstrap, topic, rest); break;
            default: throw new IllegalArgumentException("unknown scenario " + scenario);
        }
        System.out.println(Json.write(out));
        System.out.flush();
        System.exit(0);
    }

    // ---- clients -------------------------------------------------------------------

    /** Client settings from the file named by SPATE_COMPAT_CLIENT_PROPERTIES (security:
     *  security.protocol, ssl.*, sasl.*), for every client of a run; none when unset. */
    static Properties clientProperties() {
        Properties p = new Properties();
        String file = System.getenv("SPATE_COMPAT_CLIENT_PROPERTIES");
        if (file != null && !file.isEmpty()) {
            try (java.io.FileInputStream in = new java.io.FileInputStream(file)) {
                p.load(in);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }
        return p;
    }

    static Admin admin(String bootstrap) {
        Properties p = clientProperties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "compat-java-admin");
        return Admin.create(p);
    }

    static KafkaProducer<byte[], byte[]> producer(String bootstrap, Map<String, String> extra) {
        Properties p = clientProperties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        p.putAll(extra);
        if ("false".equals(p.get(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG))) {
            // Without idempotence, only one request in flight keeps order across retries.
            p.putIfAbsent(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "1");
        }
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<byte[], byte[]> consumer(String bootstrap) {
        Properties p = clientProperties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "200");
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "compat-java-consumer");
        p.put(ConsumerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "50");
        return new KafkaConsumer<>(p);
    }

    static <T> T get(Future<T> f) throws Exception {
        return f.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    static void createTopic(Admin a, String topic, int partitions, Map<String, String> configs)
            throws Exception {
        NewTopic nt = new NewTopic(topic, partitions, (short) 1).configs(configs);
        get(a.createTopics(List.of(nt)).all());
        waitPartitions(a, topic, partitions);
    }

    static void waitPartitions(Admin a, String topic, int partitions) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        while (System.nanoTime() < deadline) {
            try {
                TopicDescription d = get(a.describeTopics(List.of(topic)).allTopicNames()).get(topic);
                if (d.partitions().size() == partitions
                        && d.partitions().stream().allMatch(p -> p.leader() != null && p.leader().id() >= 0)) {
                    return;
                }
            } catch (ExecutionException e) {
                // not there yet
            }
            Thread.sleep(100);
        }
        throw new IllegalStateException("topic " + topic + " not ready");
    }

    static String str(byte[] b) {
        return b == null ? null : new String(b, StandardCharsets.UTF_8);
    }

    static byte[] bytes(String s) {
        return s == null ? null : s.getBytes(StandardCharsets.UTF_8);
    }

    static Map<String, Object> err(Throwable t) {
        if (t == null) {
            return null;
        }
        while (t instanceof ExecutionException && t.getCause() != null) {
            t = t.getCause();
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("exception", t.getClass().getSimpleName());
        return m;
    }

    /** Reads `want` records from the given partitions from their start (no group). */
    static List<Map<String, Object>> consumeAll(String bootstrap, String topic, int partitions, int want) {
        List<Map<String, Object>> got = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (got.size() < want && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    Map<String, Object> m = new LinkedHashMap<>();
                    m.put("partition", r.partition());
                    m.put("offset", r.offset());
                    m.put("key", str(r.key()));
                    m.put("value", str(r.value()));
                    List<Object> hs = new ArrayList<>();
                    for (Header h : r.headers()) {
                        hs.add(Arrays.asList(h.key(), str(h.value())));
                    }
                    m.put("headers", hs);
                    m.put("timestamp", r.timestamp());
                    m.put("timestamp_type", r.timestampType().name);
                    got.add(m);
                }
            }
        }
        got.sort((x, y) -> {
            int c = Integer.compare((Integer) x.get("partition"), (Integer) y.get("partition"));
            return c != 0 ? c : Long.compare((Long) x.get("offset"), (Long) y.get("offset"));
        });
        return got;
    }

    // ---- scenarios -----------------------------------------------------------------

    /**
     * produce CODEC ACKS IDEMPOTENT(true|false) PARTITIONS COUNT: record i has key "j<i>"
     * (null when i%8==0), value "java-<codec>-<i>" (null when i%13==6), headers h=<i> and
     * (when i%5==0) a second header "nul" with a null value, partition i%PARTITIONS.
     */
    static Map<String, Object> produce(String bootstrap, String topic, String[] a) throws Exception {
        String codec = a[0];
        int parts = Integer.parseInt(a[3]);
        int count = Integer.parseInt(a[4]);
        try (Admin adm = admin(bootstrap)) {
            createTopic(adm, topic, parts, Map.of());
        }
        Map<String, String> cfg = new HashMap<>();
        cfg.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        cfg.put(ProducerConfig.ACKS_CONFIG, a[1]);
        if (!a[2].equals("default")) {
            cfg.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, a[2]);
        }
        List<Object> produced = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, cfg)) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                List<Header> hs = new ArrayList<>();
                hs.add(new RecordHeader("h", bytes(Integer.toString(i))));
                if (i % 5 == 0) {
                    hs.add(new RecordHeader("nul", (byte[]) null));
                }
                fs.add(p.send(new ProducerRecord<>(topic, i % parts, null,
                        i % 8 == 0 ? null : bytes("j" + i),
                        i % 13 == 6 ? null : bytes("java-" + codec + "-" + i), hs)));
            }
            p.flush();
            for (Future<RecordMetadata> f : fs) {
                Map<String, Object> m = new LinkedHashMap<>();
                try {
                    RecordMetadata md = get(f);
                    m.put("partition", md.partition());
                    m.put("offset", md.hasOffset() ? md.offset() : -1L);
                    m.put("error", null);
                } catch (ExecutionException e) {
                    m.put("error", err(e));
                }
                produced.add(m);
            }
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("produced", produced);
        out.put("records", consumeAll(bootstrap, topic, parts, count));
        return out;
    }

    /** keyed PARTITIONS COUNT: key "key-<i%101>", value "<i>", the default partitioner. */
    static Map<String, Object> keyed(String bootstrap, String topic, String[] a) throws Exception {
        int parts = Integer.parseInt(a[0]);
        int count = Integer.parseInt(a[1]);
        try (Admin adm = admin(bootstrap)) {
            createTopic(adm, topic, parts, Map.of());
        }
        List<Object> produced = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = producer(bootstrap,
                Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false",
                       ProducerConfig.COMPRESSION_TYPE_CONFIG, "gzip"))) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                fs.add(p.send(new ProducerRecord<>(topic, bytes("key-" + (i % 101)), bytes(Integer.toString(i)))));
            }
            p.flush();
            for (Future<RecordMetadata> f : fs) {
                RecordMetadata md = get(f);
                produced.add(Arrays.asList(md.partition(), md.offset()));
            }
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("produced", produced);
        out.put("records", consumeAll(bootstrap, topic, parts, count));
        return out;
    }

    /** A record whose batch is exactly max.message.bytes, then one a byte larger. */
    static Map<String, Object> tooLarge(String bootstrap, String topic) throws Exception {
        try (Admin adm = admin(bootstrap)) {
            createTopic(adm, topic, 1, Map.of());
        }
        Map<String, Object> out = new LinkedHashMap<>();
        try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, Map.of(
                ProducerConfig.MAX_REQUEST_SIZE_CONFIG, Integer.toString(8 << 20),
                ProducerConfig.BATCH_SIZE_CONFIG, Integer.toString(4 << 20),
                ProducerConfig.BUFFER_MEMORY_CONFIG, Integer.toString(64 << 20),
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "none",
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false",
                ProducerConfig.RETRIES_CONFIG, "0",
                ProducerConfig.LINGER_MS_CONFIG, "0"))) {
            RecordMetadata ok = get(p.send(new ProducerRecord<>(topic, null, new byte[1048588 - 72])));
            out.put("ok_offset", ok.offset());
            try {
                get(p.send(new ProducerRecord<>(topic, null, new byte[1048588 - 71])));
                out.put("big", null);
            } catch (ExecutionException e) {
                out.put("big", err(e));
            }
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            out.put("end", c.endOffsets(List.of(tp)).get(tp));
        }
        return out;
    }

    /**
     * ride-through TOTAL FIRST: one consumer (assign, from 0) reads FIRST records, prints
     * "PAUSED" and waits for a line on stdin (the test restarts the broker meanwhile), then
     * a producer created before the restart appends 100 records "after-i" and the same
     * consumer reads on to TOTAL + 100.
     */
    static Map<String, Object> rideThrough(String bootstrap, String topic, String[] a) throws Exception {
        int total = Integer.parseInt(a[0]);
        int first = Integer.parseInt(a[1]);
        Map<String, Object> out = new LinkedHashMap<>();
        List<Object> seen = new ArrayList<>();
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap);
             KafkaProducer<byte[], byte[]> p = producer(bootstrap, Map.of(
                 ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false",
                 ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000",
                 ProducerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500"))) {
            c.assign(List.of(tp));
            c.seek(tp, 0);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (seen.size() < first && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                    seen.add(Arrays.asList(r.offset(), str(r.value())));
                }
            }
            System.out.println("PAUSED " + seen.size());
            System.out.flush();
            if (System.in.read() < 0) {
                throw new IllegalStateException("stdin closed");
            }
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < 100; i++) {
                fs.add(p.send(new ProducerRecord<>(topic, 0, null, bytes("after-" + i))));
            }
            List<Object> offs = new ArrayList<>();
            for (Future<RecordMetadata> f : fs) {
                offs.add(f.get(90, TimeUnit.SECONDS).offset());
            }
            out.put("produced_after", offs);
            deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (seen.size() < total + 100 && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    seen.add(Arrays.asList(r.offset(), str(r.value())));
                }
            }
            out.put("position", c.position(tp));
        }
        out.put("seen", seen);
        return out;
    }

    /**
     * acked-lines PARTITION COUNT VALUE_BYTES DELIVERY_TIMEOUT_MS: the default producer
     * (idempotent, acks=all) sends COUNT records to an existing topic's PARTITION, value
     * "j<i>-" padded with 'x' to VALUE_BYTES. Each outcome is printed as it arrives:
     * "ACK partition offset i" for an acknowledged record, "ERR i Exception" for a failed
     * one. Ends when every send completed (bounded by DELIVERY_TIMEOUT_MS).
     */
    static Map<String, Object> ackedLines(String bootstrap, String topic, String[] a) throws Exception {
        int partition = Integer.parseInt(a[0]);
        int count = Integer.parseInt(a[1]);
        int valueBytes = Integer.parseInt(a[2]);
        String deliveryTimeout = a[3];
        Map<String, String> cfg = new HashMap<>();
        cfg.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, deliveryTimeout);
        cfg.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG,
                Long.toString(Math.max(1000, Long.parseLong(deliveryTimeout) / 2)));
        java.util.concurrent.atomic.AtomicInteger acked = new java.util.concurrent.atomic.AtomicInteger();
        Map<String, Integer> errors = new TreeMap<>();
        try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, cfg)) {
            for (int i = 0; i < count; i++) {
                StringBuilder v = new StringBuilder("j").append(i).append('-');
                while (v.length() < valueBytes) {
                    v.append('x');
                }
                final int id = i;
                p.send(new ProducerRecord<>(topic, partition, null, bytes(v.toString())), (md, e) -> {
                    synchronized (errors) {
                        if (e == null) {
                            acked.incrementAndGet();
                            System.out.println("ACK " + md.partition() + " " + md.offset() + " " + id);
                        } else {
                            errors.merge(e.getClass().getSimpleName(), 1, Integer::sum);
                            System.out.println("ERR " + id + " " + e.getClass().getSimpleName());
                        }
                        System.out.flush();
                    }
                });
            }
            p.flush();
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("acked", acked.get());
        synchronized (errors) {
            out.put("errors", errors);
        }
        return out;
    }

    /** Topic IDs: from CreateTopics, Metadata by name and by id, DeleteTopics by id. */
    static Map<String, Object> topicIds(String bootstrap, String topic) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin a = admin(bootstrap)) {
            var created = a.createTopics(List.of(new NewTopic(topic, 3, (short) 1)));
            org.apache.kafka.common.Uuid id = get(created.topicId(topic));
            out.put("created_id_nonzero", !id.equals(org.apache.kafka.common.Uuid.ZERO_UUID));
            out.put("created_partitions", get(created.numPartitions(topic)));
            waitPartitions(a, topic, 3);
            TopicDescription byName = get(a.describeTopics(List.of(topic)).allTopicNames()).get(topic);
            out.put("same_id_by_name", byName.topicId().equals(id));
            try {
                TopicDescription byId = get(a.describeTopics(
                    org.apache.kafka.common.TopicCollection.ofTopicIds(List.of(id))).allTopicIds()).get(id);
                out.put("by_id", Arrays.asList(byId.name(), byId.partitions().size(), byId.isInternal()));
            } catch (ExecutionException e) {
                out.put("by_id", err(e));
            }
            try (KafkaProducer<byte[], byte[]> p = producer(bootstrap,
                    Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false"))) {
                out.put("produced_offset", get(p.send(new ProducerRecord<>(topic, 1, null, bytes("x")))).offset());
            }
            try {
                get(a.deleteTopics(org.apache.kafka.common.TopicCollection.ofTopicIds(List.of(id))).all());
                out.put("delete_by_id", null);
            } catch (ExecutionException e) {
                out.put("delete_by_id", err(e));
                get(a.deleteTopics(List.of(topic)).all());
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (System.nanoTime() < deadline && get(a.listTopics().names()).contains(topic)) {
                Thread.sleep(100);
            }
            out.put("listed_after_delete", get(a.listTopics().names()).contains(topic));
            try {
                get(a.describeTopics(org.apache.kafka.common.TopicCollection.ofTopicIds(List.of(id))).allTopicIds());
                out.put("describe_deleted_id", null);
            } catch (ExecutionException e) {
                out.put("describe_deleted_id", err(e));
            }
        }
        return out;
    }

    static Map<String, Object> cfg(Config c, String... keys) {
        Map<String, Object> m = new TreeMap<>();
        for (String k : keys) {
            ConfigEntry e = c.get(k);
            m.put(k, e == null ? null : Arrays.asList(e.value(), e.source().name(), e.isDefault()));
        }
        return m;
    }

    static Map<String, Object> admin(String bootstrap, String topic) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        String[] keys = {"retention.ms", "cleanup.policy", "max.message.bytes", "compression.type",
            "segment.bytes", "message.timestamp.type"};
        try (Admin a = admin(bootstrap)) {
            createTopic(a, topic, 2, Map.of("retention.ms", "123456789", "compression.type", "producer"));
            try {
                get(a.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all());
                out.put("create_again", null);
            } catch (ExecutionException e) {
                out.put("create_again", err(e));
            }
            ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            out.put("configs_created", cfg(get(a.describeConfigs(List.of(res)).all()).get(res), keys));

            get(a.incrementalAlterConfigs(Map.of(res, List.of(
                new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE)))).all());
            out.put("configs_altered", cfg(get(a.describeConfigs(List.of(res)).all()).get(res), keys));
            try {
                get(a.incrementalAlterConfigs(Map.of(res, List.of(new AlterConfigOp(
                    new ConfigEntry("retention.ms", "not-a-number"), AlterConfigOp.OpType.SET)))).all());
                out.put("alter_invalid", null);
            } catch (ExecutionException e) {
                out.put("alter_invalid", err(e));
            }

            DescribeClusterResult dc = a.describeCluster();
            out.put("cluster_id_present", get(dc.clusterId()) != null && !get(dc.clusterId()).isEmpty());
            out.put("controller", get(dc.controller()).id());
            List<Object> nodes = new ArrayList<>();
            for (Node n : get(dc.nodes())) {
                nodes.add(Arrays.asList(n.id(), n.host(), n.port()));
            }
            out.put("nodes", nodes);

            get(a.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all());
            waitPartitions(a, topic, 3);
            try {
                get(a.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all());
                out.put("create_partitions_same", null);
            } catch (ExecutionException e) {
                out.put("create_partitions_same", err(e));
            }

            // Partition p gets 10 records, timestamps base + 1000*i, except record 6 = base + 1e6.
            long base = 1_500_000_000_000L;
            try (KafkaProducer<byte[], byte[]> p = producer(bootstrap,
                    Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false"))) {
                List<Future<RecordMetadata>> fs = new ArrayList<>();
                for (int part = 0; part < 3; part++) {
                    for (int i = 0; i < 10; i++) {
                        long ts = i == 6 ? base + 1_000_000 : base + 1000L * i;
                        fs.add(p.send(new ProducerRecord<>(topic, part, ts, null, bytes(part + ":" + i))));
                    }
                }
                p.flush();
                List<Object> offs = new ArrayList<>();
                for (Future<RecordMetadata> f : fs) {
                    RecordMetadata md = get(f);
                    offs.add(Arrays.asList(md.partition(), md.offset()));
                }
                out.put("produced", offs);
            }
            TopicPartition tp0 = new TopicPartition(topic, 0);
            TopicPartition tp2 = new TopicPartition(topic, 2);
            Map<String, Object> lo = new LinkedHashMap<>();
            Map<String, OffsetSpec> specs = new LinkedHashMap<>();
            specs.put("earliest", OffsetSpec.earliest());
            specs.put("latest", OffsetSpec.latest());
            specs.put("ts_2500", OffsetSpec.forTimestamp(base + 2500));
            specs.put("ts_after_all", OffsetSpec.forTimestamp(base + 2_000_000));
            specs.put("max_timestamp", OffsetSpec.maxTimestamp());
            for (Map.Entry<String, OffsetSpec> e : specs.entrySet()) {
                var r = get(a.listOffsets(Map.of(tp0, e.getValue())).partitionResult(tp0));
                lo.put(e.getKey(), Arrays.asList(r.offset(), r.timestamp()));
            }
            out.put("list_offsets", lo);

            var dr = get(a.deleteRecords(Map.of(tp2, RecordsToDelete.beforeOffset(4))).lowWatermarks().get(tp2));
            out.put("delete_records_low", dr.lowWatermark());
            out.put("earliest_after_delete",
                get(a.listOffsets(Map.of(tp2, OffsetSpec.earliest())).partitionResult(tp2)).offset());

            try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap)) {
                Map<TopicPartition, Long> q = new HashMap<>();
                q.put(tp0, base + 3000);
                q.put(tp2, base + 500);
                Map<TopicPartition, OffsetAndTimestamp> oft = c.offsetsForTimes(q);
                out.put("offsets_for_times", Arrays.asList(
                    Arrays.asList(oft.get(tp0).offset(), oft.get(tp0).timestamp()),
                    Arrays.asList(oft.get(tp2).offset(), oft.get(tp2).timestamp())));
                Collection<TopicPartition> all = List.of(tp0, new TopicPartition(topic, 1), tp2);
                Map<String, Object> be = new TreeMap<>();
                c.beginningOffsets(all).forEach((k, v) -> be.put(Integer.toString(k.partition()), v));
                Map<String, Object> en = new TreeMap<>();
                c.endOffsets(all).forEach((k, v) -> en.put(Integer.toString(k.partition()), v));
                out.put("beginning", be);
                out.put("end", en);
                // Reading from the new start of partition 2.
                c.assign(List.of(tp2));
                c.seekToBeginning(List.of(tp2));
                List<Object> got = new ArrayList<>();
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
                while (got.size() < 6 && System.nanoTime() < deadline) {
                    for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                        got.add(Arrays.asList(r.offset(), str(r.value()), r.timestamp()));
                    }
                }
                out.put("partition2", got);
            }

            // Every broker's: a cluster spreads the partitions over them.
            List<Integer> brokerIds = new ArrayList<>();
            for (Node n : get(a.describeCluster().nodes())) {
                brokerIds.add(n.id());
            }
            Map<Integer, Map<String, LogDirDescription>> ld =
                get(a.describeLogDirs(brokerIds).allDescriptions());
            Map<String, Object> sizes = new TreeMap<>();
            int dirs = 0;
            for (Map<String, LogDirDescription> byDir : ld.values()) {
                for (LogDirDescription d : byDir.values()) {
                    dirs++;
                    if (d.error() != null) {
                        throw d.error();
                    }
                    for (Map.Entry<TopicPartition, ReplicaInfo> e : d.replicaInfos().entrySet()) {
                        if (e.getKey().topic().equals(topic)) {
                            sizes.put(Integer.toString(e.getKey().partition()), e.getValue().size());
                        }
                    }
                }
            }
            // Log dirs per broker.
            out.put("log_dirs", dirs / brokerIds.size());
            out.put("log_dir_sizes", sizes);

            get(a.deleteTopics(List.of(topic)).all());
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (System.nanoTime() < deadline && get(a.listTopics().names()).contains(topic)) {
                Thread.sleep(100);
            }
            out.put("listed_after_delete", get(a.listTopics().names()).contains(topic));
            try {
                get(a.deleteTopics(List.of(topic)).all());
                out.put("delete_again", null);
            } catch (ExecutionException e) {
                out.put("delete_again", err(e));
            }
        }
        return out;
    }

    /** Minimal JSON writer for maps, lists, strings, numbers, booleans and null. */
    static final class Json {
        static String write(Object o) {
            StringBuilder sb = new StringBuilder();
            write(sb, o);
            return sb.toString();
        }

        static void write(StringBuilder sb, Object o) {
            if (o == null) {
                sb.append("null");
            } else if (o instanceof String) {
                sb.append('"');
                for (char ch : ((String) o).toCharArray()) {
                    switch (ch) {
                        case '"': sb.append("\\\""); break;
                        case '\\': sb.append("\\\\"); break;
                        case '\n': sb.append("\\n"); break;
                        default:
                            if (ch < 0x20) {
                                sb.append(String.format("\\u%04x", (int) ch));
                            } else {
                                sb.append(ch);
                            }
                    }
                }
                sb.append('"');
            } else if (o instanceof Number || o instanceof Boolean) {
                sb.append(o);
            } else if (o instanceof Map) {
                sb.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                    if (!first) {
                        sb.append(',');
                    }
                    first = false;
                    write(sb, String.valueOf(e.getKey()));
                    sb.append(':');
                    write(sb, e.getValue());
                }
                sb.append('}');
            } else if (o instanceof Collection) {
                sb.append('[');
                boolean first = true;
                for (Object x : (Collection<?>) o) {
                    if (!first) {
                        sb.append(',');
                    }
                    first = false;
                    write(sb, x);
                }
                sb.append(']');
            } else {
                write(sb, o.toString());
            }
        }
    }
}
