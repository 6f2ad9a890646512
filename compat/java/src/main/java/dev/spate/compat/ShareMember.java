package dev.spate.compat;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;

import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * One member of a KIP-932 share group (Kafka's KafkaShareConsumer), driven line by line
 * on stdin by compat/tests/test_share_groups.py; every answer is one JSON line on stdout.
 *
 * <pre>java -cp spate-compat-java.jar dev.spate.compat.ShareMember BOOTSTRAP GROUP TOPIC (implicit|explicit) [MAX_POLL_RECORDS]</pre>
 *
 * Commands:
 * <ul>
 *   <li>{@code poll MS}: one poll; {"polled": [{"p": partition, "o": offset, "v": value, "d": delivery count}, ...]}</li>
 *   <li>{@code ack P O accept|release|reject}: acknowledge a record of the last poll (explicit mode); {"acked": true}</li>
 *   <li>{@code commit}: commitSync; {"committed": {"topic-p": null or the error}}</li>
 *   <li>{@code close}: close the consumer (its session ends) and exit; {"closed": true}</li>
 * </ul>
 * Errors of a command are reported as {"error": "..."}; the member keeps going.
 */
public final class ShareMember {
    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: ShareMember BOOTSTRAP GROUP TOPIC (implicit|explicit)");
            System.exit(2);
        }
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, args[1]);
        p.put(ConsumerConfig.SHARE_ACKNOWLEDGEMENT_MODE_CONFIG, args[3]);
        p.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, "1000");
        if (args.length > 4) {
            p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, args[4]);
        }
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<ConsumerRecord<String, String>> last = new ArrayList<>();
        try (KafkaShareConsumer<String, String> c = new KafkaShareConsumer<>(p);
             BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            c.subscribe(List.of(args[2]));
            emit("{\"ready\": true}");
            String line;
            while ((line = in.readLine()) != null) {
                String[] cmd = line.trim().split("\\s+");
                try {
                    switch (cmd[0]) {
                        case "poll" -> {
                            last.clear();
                            StringBuilder out = new StringBuilder("{\"polled\": [");
                            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(Long.parseLong(cmd[1])))) {
                                if (!last.isEmpty()) out.append(", ");
                                last.add(r);
                                Optional<Short> d = r.deliveryCount();
                                out.append("{\"p\": ").append(r.partition())
                                   .append(", \"o\": ").append(r.offset())
                                   .append(", \"v\": \"").append(r.value()).append('"')
                                   .append(", \"d\": ").append(d.map(String::valueOf).orElse("null"))
                                   .append('}');
                            }
                            emit(out.append("]}").toString());
                        }
                        case "ack" -> {
                            int part = Integer.parseInt(cmd[1]);
                            long offset = Long.parseLong(cmd[2]);
                            AcknowledgeType type = AcknowledgeType.valueOf(cmd[3].toUpperCase());
                            ConsumerRecord<String, String> r = last.stream()
                                .filter(x -> x.partition() == part && x.offset() == offset)
                                .findFirst().orElseThrow(() -> new IllegalArgumentException("no such record in the last poll"));
                            c.acknowledge(r, type);
                            emit("{\"acked\": true}");
                        }
                        case "commit" -> {
                            Map<TopicIdPartition, Optional<KafkaException>> result = c.commitSync(Duration.ofSeconds(30));
                            StringBuilder out = new StringBuilder("{\"committed\": {");
                            boolean first = true;
                            for (var e : result.entrySet()) {
                                if (!first) out.append(", ");
                                first = false;
                                out.append('"').append(e.getKey().topic()).append('-').append(e.getKey().partition()).append("\": ")
                                   .append(e.getValue().map(x -> "\"" + x.getClass().getSimpleName() + "\"").orElse("null"));
                            }
                            emit(out.append("}}").toString());
                        }
                        case "close" -> {
                            c.close(Duration.ofSeconds(30));
                            emit("{\"closed\": true}");
                            return;
                        }
                        default -> emit("{\"error\": \"unknown command\"}");
                    }
                } catch (RuntimeException e) {
                    emit("{\"error\": \"" + e.getClass().getSimpleName() + ": "
                        + String.valueOf(e.getMessage()).replace('"', '\'') + "\"}");
                }
            }
        }
    }

    private static void emit(String json) {
        System.out.println(json);
        System.out.flush();
    }
}
