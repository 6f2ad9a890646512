package dev.spate.compat.frameworks;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The Kafka Streams application of test_streams.py. From one input topic (String key, any
 * String value, event time = record timestamp) it keeps
 *
 * <ul>
 *   <li>a KTable of record counts per key in the key-value store {@code counts-store}, each
 *       update written to the counts topic as {@code key -> "count"};
 *   <li>counts per key and tumbling event-time window in the window store {@code window-store},
 *       each update written to the windows topic as {@code "key@windowStartMs" -> "count"}.
 * </ul>
 *
 * <p>The store cache is off, so every input record yields exactly one update on each output
 * topic and one changelog record per store. at_least_once, commits every 200 ms.
 *
 * <p>Usage: {@code CountingApp BOOTSTRAP APPLICATION_ID STATE_DIR INPUT COUNTS WINDOWS WINDOW_MS}.
 * Events go to stdout as lines starting with {@code EVENT } followed by JSON: state changes,
 * restored store partitions, and {@code closed} once a SIGTERM has closed the app (leaving its
 * group, so that a restarted instance need not wait for the session timeout).
 */
public final class CountingApp {
    private CountingApp() {}

    static synchronized void event(String json) {
        System.out.println("EVENT " + json);
        System.out.flush();
    }

    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 7 && args.length != 8) {
            System.err.println("usage: CountingApp BOOTSTRAP APPLICATION_ID STATE_DIR INPUT COUNTS WINDOWS WINDOW_MS [GUARANTEE]");
            System.exit(2);
        }
        String bootstrap = args[0];
        String appId = args[1];
        String stateDir = args[2];
        String input = args[3];
        String countsTopic = args[4];
        String windowsTopic = args[5];
        long windowMs = Long.parseLong(args[6]);
        String guarantee = args.length == 8 ? args[7] : StreamsConfig.AT_LEAST_ONCE;

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 10000);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1000);

        StreamsBuilder builder = new StreamsBuilder();
        KGroupedStream<String, String> byKey = builder
                .stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .groupByKey(Grouped.with(Serdes.String(), Serdes.String()));

        byKey.count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts-store")
                        .withKeySerde(Serdes.String())
                        .withValueSerde(Serdes.Long()))
                .toStream()
                .mapValues(n -> Long.toString(n))
                .to(countsTopic, Produced.with(Serdes.String(), Serdes.String()));

        // A grace period of an hour: the test's event times are minutes old and arrive in
        // any order across keys, and no window may be closed while it still counts.
        byKey.windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMillis(windowMs), Duration.ofHours(1)))
                .count(Materialized.<String, Long, WindowStore<Bytes, byte[]>>as("window-store")
                        .withKeySerde(Serdes.String())
                        .withValueSerde(Serdes.Long()))
                .toStream((windowed, n) -> windowed.key() + "@" + windowed.window().start())
                .mapValues(n -> Long.toString(n))
                .to(windowsTopic, Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setStateListener((now, before) ->
                event("{\"event\":\"state\",\"state\":" + quote(now.name()) + "}"));
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {
                event("{\"event\":\"restore_start\",\"store\":" + quote(store) + ",\"topic\":"
                        + quote(tp.topic()) + ",\"partition\":" + tp.partition() + ",\"start\":" + start
                        + ",\"end\":" + end + "}");
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long count) {}

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
                event("{\"event\":\"restored\",\"store\":" + quote(store) + ",\"topic\":"
                        + quote(tp.topic()) + ",\"partition\":" + tp.partition() + ",\"records\":"
                        + total + "}");
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            event("{\"event\":\"error\",\"message\":" + quote(String.valueOf(e)) + "}");
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                    .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });

        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            boolean clean = streams.close(CloseOptions
                    .groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                    .withTimeout(Duration.ofSeconds(20)));
            event("{\"event\":\"closed\",\"clean\":" + clean + "}");
            closed.countDown();
        }, "close-on-sigterm"));
        streams.start();
        closed.await();
    }
}
