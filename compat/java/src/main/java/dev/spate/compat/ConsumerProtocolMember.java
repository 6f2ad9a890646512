package dev.spate.compat;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Pattern;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.SubscriptionPattern;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * One member of a KIP-848 consumer group (group.protocol=consumer; or, with the
 * environment variable GROUP_PROTOCOL=classic, of a classic group: the migration tests),
 * for compat/tests/test_consumer_group_protocol.py and test_consumer_group_migration.py. It prints a JSON line on every change of
 * its assignment ({"assigned": ["topic-0", ...]}), one per record it reads ({"record":
 * "topic-partition@offset"}) and leaves the group when its stdin closes ({"closed":
 * true}). Failed commits are reported on stderr and retried. A kill -9 leaves it in the group until the broker's session timeout.
 *
 * <pre>java -cp spate-compat-java.jar dev.spate.compat.ConsumerProtocolMember BOOTSTRAP GROUP (topics T1,T2 | regex RE) [INSTANCE_ID]</pre>
 */
public final class ConsumerProtocolMember {
    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: ConsumerProtocolMember BOOTSTRAP GROUP (topics T1,T2 | regex RE) [INSTANCE_ID]");
            System.exit(2);
        }
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, args[1]);
        String protocol = System.getenv().getOrDefault("GROUP_PROTOCOL", "consumer");
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        if (protocol.equals("classic")) {
            p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
            p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        }
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, "1000");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        if (args.length > 4) {
            p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, args[4]);
        }
        AtomicBoolean stop = new AtomicBoolean();
        Thread stdin = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                while (r.readLine() != null) { }
            } catch (Exception ignored) { }
            stop.set(true);
        });
        stdin.setDaemon(true);
        stdin.start();
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            ConsumerRebalanceListener listener = new ConsumerRebalanceListener() {
                @Override public void onPartitionsRevoked(Collection<TopicPartition> parts) { }
                @Override public void onPartitionsAssigned(Collection<TopicPartition> parts) { }
            };
            if (args[2].equals("regex")) {
                c.subscribe(new SubscriptionPattern(args[3]), listener);
            } else {
                c.subscribe(List.of(args[3].split(",")), listener);
            }
            String last = null;
            while (!stop.get()) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                    emit("{\"record\": \"" + r.topic() + "-" + r.partition() + "@" + r.offset() + "\"}");
                }
                try {
                    c.commitSync();
                } catch (RuntimeException e) {
                    // A commit refused during a rebalance (e.g. STALE_MEMBER_EPOCH) is
                    // retried on the next round, as an application would.
                    System.err.println("commit failed: " + e);
                }
                TreeSet<String> now = new TreeSet<>();
                for (TopicPartition tp : c.assignment()) {
                    now.add("\"" + tp.topic() + "-" + tp.partition() + "\"");
                }
                String line = "{\"assigned\": [" + String.join(", ", now) + "]}";
                if (!line.equals(last)) {
                    emit(line);
                    last = line;
                }
            }
        }
        emit("{\"closed\": true}");
    }

    private static void emit(String line) {
        System.out.println(line);
        System.out.flush();
    }
}
