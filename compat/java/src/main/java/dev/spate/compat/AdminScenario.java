package dev.spate.compat;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeConfigsOptions;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.ListConfigResourcesOptions;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;

/**
 * Admin-client scenarios around broker configs and topic descriptions; prints one JSON
 * object on the last stdout line, as Scenario does.
 *
 * <pre>java -cp spate-compat-java.jar dev.spate.compat.AdminScenario BOOTSTRAP SCENARIO [ARGS...]</pre>
 *
 * <ul>
 * <li>{@code broker-configs NAME} describes broker NAME ("" for the cluster default) with
 *     synonyms and documentation: every entry with its value, source, read-only and
 *     sensitive flags, type, synonyms and whether it has documentation.</li>
 * <li>{@code topic-configs NAME} the same for topic NAME.</li>
 * <li>{@code alter-broker NAME OP KEY [VALUE]} runs one IncrementalAlterConfigs op
 *     (SET/DELETE/APPEND/SUBTRACT) on broker NAME and reports the error, if any.</li>
 * <li>{@code describe-topics LIMIT TOPIC...} describes the topics with that partition limit
 *     per response (DescribeTopicPartitions paging).</li>
 * <li>{@code list-config-resources [TYPE...]} lists config resources of those types (all
 *     when none are given).</li>
 * </ul>
 */
public final class AdminScenario {
    private static final long TIMEOUT_S = 30;

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: AdminScenario BOOTSTRAP SCENARIO [ARGS...]");
            System.exit(2);
        }
        String[] rest = Arrays.copyOfRange(args, 2, args.length);
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        Map<String, Object> out;
        try (Admin a = Admin.create(p)) {
            switch (args[1]) {
                case "broker-configs": out = configs(a, ConfigResource.Type.BROKER, rest[0]); break;
                case "topic-configs": out = configs(a, ConfigResource.Type.TOPIC, rest[0]); break;
                case "alter-broker": out = alterBroker(a, rest); break;
                case "describe-topics": out = describeTopics(a, rest); break;
                case "list-config-resources": out = listConfigResources(a, rest); break;
                default: throw new IllegalArgumentException("unknown scenario " + args[1]);
            }
        }
        System.out.println(Scenario.Json.write(out));
    }

    private static <T> T get(org.apache.kafka.common.KafkaFuture<T> f) throws Exception {
        return f.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    private static String err(ExecutionException e) {
        return e.getCause().getClass().getSimpleName() + ": " + e.getCause().getMessage();
    }

    private static Map<String, Object> configs(Admin a, ConfigResource.Type type, String name) throws Exception {
        ConfigResource res = new ConfigResource(type, name);
        Config config = get(a.describeConfigs(List.of(res),
            new DescribeConfigsOptions().includeSynonyms(true).includeDocumentation(true)).all()).get(res);
        Map<String, Object> configs = new TreeMap<>();
        for (ConfigEntry e : config.entries()) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("value", e.value());
            m.put("source", e.source().name());
            m.put("read_only", e.isReadOnly());
            m.put("sensitive", e.isSensitive());
            m.put("type", e.type().name());
            List<Object> syn = new ArrayList<>();
            for (ConfigEntry.ConfigSynonym s : e.synonyms()) {
                syn.add(Arrays.asList(s.name(), s.value(), s.source().name()));
            }
            m.put("synonyms", syn);
            m.put("documented", e.documentation() != null && !e.documentation().isEmpty());
            configs.put(e.name(), m);
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("configs", configs);
        return out;
    }

    private static Map<String, Object> alterBroker(Admin a, String[] args) throws Exception {
        ConfigResource res = new ConfigResource(ConfigResource.Type.BROKER, args[0]);
        AlterConfigOp.OpType op = AlterConfigOp.OpType.valueOf(args[1]);
        String value = args.length > 3 ? args[3] : null;
        Map<String, Object> out = new LinkedHashMap<>();
        try {
            get(a.incrementalAlterConfigs(Map.of(res, List.of(
                new AlterConfigOp(new ConfigEntry(args[2], value), op)))).all());
            out.put("error", null);
        } catch (ExecutionException e) {
            out.put("error", err(e));
        }
        return out;
    }

    private static Map<String, Object> describeTopics(Admin a, String[] args) throws Exception {
        int limit = Integer.parseInt(args[0]);
        List<String> names = Arrays.asList(args).subList(1, args.length);
        Map<String, Object> topics = new TreeMap<>();
        Map<String, Object> errors = new TreeMap<>();
        var result = a.describeTopics(names, new DescribeTopicsOptions().partitionSizeLimitPerResponse(limit));
        for (var entry : result.topicNameValues().entrySet()) {
            try {
                TopicDescription d = get(entry.getValue());
                List<Object> parts = new ArrayList<>();
                for (TopicPartitionInfo pi : d.partitions()) {
                    parts.add(Arrays.asList(pi.partition(), pi.leader() == null ? null : pi.leader().id(),
                        pi.replicas().stream().map(n -> n.id()).toList(),
                        pi.isr().stream().map(n -> n.id()).toList()));
                }
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("internal", d.isInternal());
                m.put("topic_id_set", d.topicId() != null && !d.topicId().toString().equals("AAAAAAAAAAAAAAAAAAAAAA"));
                m.put("partitions", parts);
                topics.put(entry.getKey(), m);
            } catch (ExecutionException e) {
                errors.put(entry.getKey(), err(e));
            }
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("topics", topics);
        out.put("errors", errors);
        return out;
    }

    private static Map<String, Object> listConfigResources(Admin a, String[] args) throws Exception {
        Set<ConfigResource.Type> types = new HashSet<>();
        for (String t : args) {
            types.add(ConfigResource.Type.valueOf(t));
        }
        Map<String, Object> out = new LinkedHashMap<>();
        try {
            Collection<ConfigResource> found = get(a.listConfigResources(types, new ListConfigResourcesOptions()).all());
            List<Object> list = new ArrayList<>();
            for (ConfigResource r : found) {
                list.add(Arrays.asList(r.type().name(), r.name()));
            }
            list.sort((x, y) -> x.toString().compareTo(y.toString()));
            out.put("resources", list);
            out.put("error", null);
        } catch (ExecutionException e) {
            out.put("error", err(e));
        }
        return out;
    }
}
