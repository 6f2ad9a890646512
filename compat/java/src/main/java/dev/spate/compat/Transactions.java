package dev.spate.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The Java transactional producer against a broker: a committed, an aborted and a second
 * committed transaction, then a second producer with the same transactional id fences the
 * first. Prints, as one JSON object, what read_committed and read_uncommitted consumers
 * read ("offset:value" strings) and how the fenced producer failed;
 * compat/tests/test_transactions.py asserts on it.
 *
 * <pre>java -cp spate-compat-java.jar dev.spate.compat.Transactions BOOTSTRAP TOPIC TXN_ID</pre>
 */
public final class Transactions {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], txnId = args[2];
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin a = Admin.create(ap)) {
            a.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
        }
        KafkaProducer<byte[], byte[]> first = producer(bootstrap, txnId);
        first.initTransactions();
        first.beginTransaction();
        for (int i = 0; i < 5; i++) first.send(record(topic, "c" + i));
        first.commitTransaction();
        first.beginTransaction();
        for (int i = 0; i < 3; i++) first.send(record(topic, "a" + i));
        first.flush();
        first.abortTransaction();
        first.beginTransaction();
        first.send(record(topic, "last"));
        first.commitTransaction();

        // A zombie: an open transaction when a new instance takes the id over.
        first.beginTransaction();
        first.send(record(topic, "zombie")).get();
        KafkaProducer<byte[], byte[]> second = producer(bootstrap, txnId);
        second.initTransactions();
        String fenced = "not fenced";
        try {
            first.commitTransaction();
        } catch (ProducerFencedException e) {
            fenced = e.getClass().getSimpleName();
        } catch (Exception e) {
            fenced = "other: " + e;
        }
        first.close(Duration.ZERO);
        second.beginTransaction();
        second.send(record(topic, "second"));
        second.commitTransaction();
        second.close();

        StringBuilder out = new StringBuilder("{");
        out.append("\"fenced\":\"").append(fenced.replace("\"", "'")).append("\",");
        out.append("\"read_committed\":").append(json(read(bootstrap, topic, "read_committed"))).append(',');
        out.append("\"read_uncommitted\":").append(json(read(bootstrap, topic, "read_uncommitted")));
        out.append('}');
        System.out.println(out);
    }

    static ProducerRecord<byte[], byte[]> record(String topic, String value) {
        return new ProducerRecord<>(topic, 0, null, value.getBytes(StandardCharsets.UTF_8));
    }

    static KafkaProducer<byte[], byte[]> producer(String bootstrap, String txnId) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 30000);
        return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
    }

    static List<String> read(String bootstrap, String topic, String isolation) {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        List<String> got = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> consumer =
                 new KafkaConsumer<>(c, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            Map<TopicPartition, Long> end = consumer.endOffsets(List.of(tp));
            long deadline = System.currentTimeMillis() + 30000;
            while (consumer.position(tp) < end.get(tp) && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    got.add(r.offset() + ":" + new String(r.value(), StandardCharsets.UTF_8));
                }
            }
        }
        return got;
    }

    static String json(List<String> items) {
        List<String> quoted = new ArrayList<>();
        for (String s : items) quoted.add("\"" + s + "\"");
        Collections.addAll(quoted);
        return "[" + String.join(",", quoted) + "]";
    }
}
