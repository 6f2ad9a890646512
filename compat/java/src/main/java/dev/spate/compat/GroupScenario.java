package dev.spate.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Consumer-group scenarios with the Java kafka-clients; prints one JSON object on the
 * last stdout line for compat/tests/test_groups.py.
 *
 * <pre>java -cp spate-compat-java.jar dev.spate.compat.GroupScenario BOOTSTRAP SCENARIO TOPIC GROUP PARTITIONS COUNT</pre>
 *
 * cooperative: c1 (CooperativeStickyAssignor) reads COUNT records alone, c2 joins,
 * COUNT more records are produced and both read to the end, committing synchronously.
 * static: two static members read COUNT records; the first is closed and restarted
 * with the same group.instance.id; generations and callbacks are reported.
 */
public final class GroupScenario {
    private static final long DEADLINE_MS = 60_000;

    public static void main(String[] args) throws Exception {
        if (args.length < 6) {
            System.err.println("usage: GroupScenario BOOTSTRAP SCENARIO TOPIC GROUP PARTITIONS COUNT");
            System.exit(2);
        }
        String bootstrap = args[0];
        String topic = args[2];
        String group = args[3];
        int parts = Integer.parseInt(args[4]);
        int count = Integer.parseInt(args[5]);
        Map<String, Object> out;
        switch (args[1]) {
            case "cooperative": out = cooperative(bootstrap, topic, group, parts, count); break;
            case "static": out = staticMembers(bootstrap, topic, group, parts, count); break;
            default: throw new IllegalArgumentException("unknown scenario " + args[1]);
        }
        System.out.println(json(out));
        System.out.flush();
        System.exit(0);
    }

    /** A consumer with its rebalance events, records and not yet committed offsets. */
    static final class Member implements ConsumerRebalanceListener {
        final String name;
        final KafkaConsumer<byte[], byte[]> consumer;
        final List<Object> events = new ArrayList<>();
        final List<Object> records = new ArrayList<>();
        final Map<TopicPartition, OffsetAndMetadata> pending = new HashMap<>();
        final Set<Integer> owned = new TreeSet<>();
        boolean closed;

        Member(String name, String bootstrap, String group, String topic, Map<String, String> extra) {
            this.name = name;
            Properties p = new Properties();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.CLIENT_ID_CONFIG, "compat-java-" + name);
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
            p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
            p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "100");
            p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
            p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
            p.putAll(extra);
            consumer = new KafkaConsumer<>(p);
            consumer.subscribe(List.of(topic), this);
        }

        private static List<Integer> sorted(Collection<TopicPartition> ps) {
            List<Integer> l = new ArrayList<>();
            for (TopicPartition tp : ps) l.add(tp.partition());
            l.sort(null);
            return l;
        }

        @Override public void onPartitionsRevoked(Collection<TopicPartition> ps) {
            events.add(List.of("revoked", sorted(ps)));
            // Commit what was processed of the partitions that go away.
            Map<TopicPartition, OffsetAndMetadata> mine = new HashMap<>();
            for (TopicPartition tp : ps) {
                OffsetAndMetadata o = pending.remove(tp);
                if (o != null) mine.put(tp, o);
                owned.remove(tp.partition());
            }
            if (!mine.isEmpty()) consumer.commitSync(mine);
        }

        @Override public void onPartitionsAssigned(Collection<TopicPartition> ps) {
            events.add(List.of("assigned", sorted(ps)));
            for (TopicPartition tp : ps) owned.add(tp.partition());
        }

        @Override public void onPartitionsLost(Collection<TopicPartition> ps) {
            events.add(List.of("lost", sorted(ps)));
            for (TopicPartition tp : ps) {
                pending.remove(tp);
                owned.remove(tp.partition());
            }
        }

        void step() {
            if (closed) return;
            ConsumerRecords<byte[], byte[]> rs = consumer.poll(Duration.ofMillis(100));
            for (ConsumerRecord<byte[], byte[]> r : rs) {
                records.add(List.of(r.partition(), r.offset(), new String(r.value(), StandardCharsets.UTF_8)));
                pending.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
            }
            commit();
        }

        void commit() {
            if (pending.isEmpty()) return;
            try {
                consumer.commitSync(new HashMap<>(pending));
                pending.clear();
            } catch (RebalanceInProgressException e) {
                // Kept; committed after the rebalance (or in onPartitionsRevoked).
            }
        }

        void close() {
            if (!closed) {
                closed = true;
                consumer.close(Duration.ofSeconds(10));
            }
        }
    }

    static void until(List<Member> ms, BooleanSupplier cond, String what) {
        long deadline = System.currentTimeMillis() + DEADLINE_MS;
        while (!cond.getAsBoolean()) {
            if (System.currentTimeMillis() > deadline) {
                StringBuilder sb = new StringBuilder("timed out waiting for " + what + ":");
                for (Member m : ms) sb.append(' ').append(m.name).append(m.owned).append(m.events).append(" n=").append(m.records.size());
                throw new IllegalStateException(sb.toString());
            }
            for (Member m : ms) m.step();
        }
    }

    static void drain(List<Member> ms, long millis) {
        long end = System.currentTimeMillis() + millis;
        while (System.currentTimeMillis() < end) for (Member m : ms) m.step();
    }

    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return Admin.create(p);
    }

    static void createAndProduce(Admin admin, String bootstrap, String topic, int parts, int from, int count,
                                 boolean create) throws Exception {
        if (create) {
            admin.createTopics(List.of(new NewTopic(topic, parts, (short) 1))).all().get(30, TimeUnit.SECONDS);
            long deadline = System.currentTimeMillis() + 30_000;
            while (true) {
                try {
                    if (admin.describeTopics(List.of(topic)).allTopicNames().get(10, TimeUnit.SECONDS)
                            .get(topic).partitions().size() == parts) break;
                } catch (Exception e) {
                    if (System.currentTimeMillis() > deadline) throw e;
                }
                Thread.sleep(100);
            }
        }
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p)) {
            List<java.util.concurrent.Future<?>> fs = new ArrayList<>();
            for (int i = from; i < from + count; i++) {
                fs.add(prod.send(new ProducerRecord<>(topic, i % parts, ("k" + i).getBytes(StandardCharsets.UTF_8),
                        ("v" + i).getBytes(StandardCharsets.UTF_8))));
            }
            for (java.util.concurrent.Future<?> f : fs) f.get(30, TimeUnit.SECONDS);
        }
    }

    static int total(List<Member> ms) {
        int n = 0;
        for (Member m : ms) n += m.records.size();
        return n;
    }

    static Map<String, Object> committed(Admin admin, String group) throws Exception {
        Map<String, Object> out = new TreeMap<>();
        for (Map.Entry<TopicPartition, OffsetAndMetadata> e : admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS).entrySet()) {
            out.put(String.valueOf(e.getKey().partition()), e.getValue() == null ? null : e.getValue().offset());
        }
        return out;
    }

    static Map<String, Object> cooperative(String bootstrap, String topic, String group, int parts, int count)
            throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin admin = admin(bootstrap)) {
            createAndProduce(admin, bootstrap, topic, parts, 0, count, true);
            Map<String, String> coop = Map.of(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                    "org.apache.kafka.clients.consumer.CooperativeStickyAssignor");
            Member c1 = new Member("c1", bootstrap, group, topic, coop);
            List<Member> ms = new ArrayList<>(List.of(c1));
            try {
                until(ms, () -> c1.records.size() >= count / 2, "c1 reads half");
                Member c2 = new Member("c2", bootstrap, group, topic, coop);
                ms.add(c2);
                until(ms, () -> c2.owned.size() == parts / 2 && c1.owned.size() == parts - parts / 2,
                        "the incremental rebalance");
                createAndProduce(admin, bootstrap, topic, parts, count, count, false);
                until(ms, () -> total(ms) >= 2 * count, "all records");
                drain(ms, 1000);
                for (Member m : ms) m.commit();
                ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all()
                        .get(30, TimeUnit.SECONDS).get(group);
                out.put("protocol", d.partitionAssignor());
                out.put("state", d.groupState().toString());
                out.put("generation_c1", c1.consumer.groupMetadata().generationId());
                out.put("generation_c2", c2.consumer.groupMetadata().generationId());
                out.put("c1_events", new ArrayList<>(c1.events));
                out.put("c2_events", new ArrayList<>(c2.events));
                out.put("c1_final", new ArrayList<>(c1.owned));
                out.put("c2_final", new ArrayList<>(c2.owned));
                List<Object> all = new ArrayList<>(c1.records);
                all.addAll(c2.records);
                out.put("records", all);
                out.put("committed", committed(admin, group));
            } finally {
                for (Member m : ms) m.close();
            }
        }
        return out;
    }

    static Map<String, Object> staticMembers(String bootstrap, String topic, String group, int parts, int count)
            throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin admin = admin(bootstrap)) {
            createAndProduce(admin, bootstrap, topic, parts, 0, count, true);
            Member a = new Member("a", bootstrap, group, topic, Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "inst-a"));
            Member b = new Member("b", bootstrap, group, topic, Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "inst-b"));
            List<Member> ms = new ArrayList<>(List.of(a, b));
            try {
                until(ms, () -> total(ms) >= count && !a.owned.isEmpty() && !b.owned.isEmpty(), "both members read");
                out.put("generation_before", b.consumer.groupMetadata().generationId());
                out.put("a_member_before", a.consumer.groupMetadata().memberId());
                out.put("b_member_before", b.consumer.groupMetadata().memberId());
                out.put("a_owned_before", new ArrayList<>(a.owned));
                out.put("b_owned_before", new ArrayList<>(b.owned));
                int bEvents = b.events.size();
                a.close();   // a static member's close does not leave the group
                Member a2 = new Member("a2", bootstrap, group, topic, Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "inst-a"));
                ms.add(a2);
                until(ms, () -> !a2.owned.isEmpty(), "a2 assigned");
                createAndProduce(admin, bootstrap, topic, parts, count, count, false);
                until(ms, () -> total(ms) >= 2 * count, "all records");
                drain(ms, 1000);
                out.put("generation_after_a2", a2.consumer.groupMetadata().generationId());
                out.put("generation_after_b", b.consumer.groupMetadata().generationId());
                out.put("a2_member", a2.consumer.groupMetadata().memberId());
                out.put("b_member_after", b.consumer.groupMetadata().memberId());
                out.put("a2_owned", new ArrayList<>(a2.owned));
                out.put("b_owned_after", new ArrayList<>(b.owned));
                out.put("b_events_during_restart", new ArrayList<>(b.events.subList(bEvents, b.events.size())));
                out.put("a2_events", new ArrayList<>(a2.events));
                List<Object> all = new ArrayList<>(a.records);
                all.addAll(b.records);
                all.addAll(a2.records);
                out.put("records", all);
                ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all()
                        .get(30, TimeUnit.SECONDS).get(group);
                out.put("state", d.groupState().toString());
                List<Object> members = new ArrayList<>();
                d.members().forEach(m -> members.add(List.of(m.groupInstanceId().orElse(""), m.consumerId())));
                members.sort((x, y) -> x.toString().compareTo(y.toString()));
                out.put("members", members);
            } finally {
                for (Member m : ms) m.close();
            }
        }
        return out;
    }

    // ---- JSON (maps, lists, strings, numbers, booleans, null) ----------------------

    static String json(Object o) {
        StringBuilder sb = new StringBuilder();
        write(sb, o);
        return sb.toString();
    }

    private static void write(StringBuilder sb, Object o) {
        if (o == null) {
            sb.append("null");
        } else if (o instanceof String) {
            sb.append('"');
            for (char c : ((String) o).toCharArray()) {
                if (c == '"' || c == '\\') sb.append('\\').append(c);
                else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
                else sb.append(c);
            }
            sb.append('"');
        } else if (o instanceof Number || o instanceof Boolean) {
            sb.append(o);
        } else if (o instanceof Map) {
            sb.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                if (!first) sb.append(',');
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
                if (!first) sb.append(',');
                first = false;
                write(sb, x);
            }
            sb.append(']');
        } else {
            write(sb, o.toString());
        }
    }
}
